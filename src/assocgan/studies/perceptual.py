"""``perceptual``: the user study (the paper's Table 4) on a finished run folder: a local voting page
(``assocgan.perceptual``). It trains nothing; its votes go to RUN_DIR/perceptual/, and ``assocgan report RUN_DIR``
shows them."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .base import StudyKind


class PerceptualStudy(StudyKind):
    name = "perceptual"
    help = (
        "the user study (Table 4): a local page on which participants pick the most realistic output of each "
        "group of a finished run; its votes go to RUN_DIR/perceptual/"
    )
    details = (
        "Each group is one test image through every method; the outputs are made once, from the run's checkpoints, into RUN_DIR/perceptual/. "
        "Run it again to go on collecting votes; options left out keep the study's design."
    )
    trains = False

    def add_arguments(self, group) -> None:
        group.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (results.json, checkpoints/)")
        group.add_argument("--groups", type=int, help="groups per participant, spread evenly over the tasks (default 60, as in the paper)")
        group.add_argument("--methods", help="comma-separated methods of the run to compare (default: every complete one)")
        group.add_argument(
            "--show-target", action=argparse.BooleanOptionalAction, default=None, help="show each group's target beside the input (default: hidden)"
        )
        group.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)")
        group.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
        g = group.add_argument_group("a run on your own data that has moved since (default: where results.json says it was)")
        g.add_argument("--data", help="the run's --data ROOT")
        g.add_argument("--clean-images", help="the run's --clean-images DIR")
        g.add_argument("--recipe", help="the run's --recipe")

    def work(self, args: argparse.Namespace) -> int:
        """Serve the voting page until interrupted."""
        from ..perceptual.server import serve_study

        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods is not None else None
        if methods == []:
            raise UserError("--methods: give at least one method")
        if not 0 <= args.port <= 65535:
            raise UserError(f"--port {args.port}: must be 0 (any free port) to 65535")
        serve_study(
            args.run_dir,
            groups=args.groups,
            methods=methods,
            show_target=args.show_target,
            host=args.host,
            port=args.port,
            bench_args={"data": args.data, "clean_images": args.clean_images, "recipe": args.recipe},
        )
        return 0
