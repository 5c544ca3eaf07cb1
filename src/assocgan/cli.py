"""The command line: parse arguments and call run / report. Bad input exits with code 2 and one line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import UserError, exit_code


def _add_run_options(
    p: argparse.ArgumentParser, *, with_methods: bool = True, methods: str | None = "tl,jl", out: str = "runs/run", preset: str | None = None
) -> None:
    from .config import PRESETS
    from .methods import METHODS
    from .metrics import METRICS

    g = p.add_argument_group("what to run")
    g.add_argument(
        "--config",
        metavar="PATH",
        help="the settings of an earlier run (its folder, its results.json, or a study run's run.json); options given beside it override them",
    )
    g.add_argument("--benchmark", help="built-in benchmark (see `assocgan benchmarks`; default restore4)")
    g.add_argument("--data", metavar="ROOT", help="your own paired tasks: ROOT/<task>/{train,test}/{A,B}/ or aligned A|B images")
    g.add_argument("--clean-images", metavar="DIR", help="a folder of clean images, with --recipe")
    g.add_argument("--recipe", metavar="RECIPE", help="degradations for --clean-images, one task per comma: blur:3,noise:0.2,jpeg:10")
    g.add_argument("--metric", choices=list(METRICS), help="metric of the accuracy matrix (default: the benchmark's)")
    if with_methods:
        g.add_argument(
            "--methods",
            metavar="LIST",
            help=f"comma-separated, from: {', '.join(METHODS)}"
            + (f" (default {methods})" if methods else " (default: those of tl,jl,replay,assoc that exist)"),
        )
    g.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="smoke (seconds), quick (default, minutes on a CPU), paper-quick (the paper's protocol at quick's size: "
        "the adversarial term, eq. 3's association targets, the distillation on), paper (224 px, GPU)",
    )
    g.add_argument(
        "--seeds",
        metavar="LIST",
        help="several seeds, comma-separated (0,1,2): each runs into OUT/seed<k>/, and OUT/results.json "
        "and OUT/report.html give the mean ± sd of every figure over them",
    )
    g.add_argument("--out", metavar="DIR", default=out, help="output folder (results.json, CSVs, checkpoints, samples, report.html)")
    g.add_argument("--device", metavar="DEVICE", help="torch device (default: cuda if available, else cpu)")
    g.add_argument(
        "--tensorboard",
        metavar="on|off",
        help="TensorBoard streams in OUT/tb/<method>/ (default: on when tensorboard is installed, pip install 'assocgan[tensorboard]')",
    )
    _add_settings(p, g, preset)
    seen: dict[str, str] = {}
    for m in METHODS.values():
        if not m.options:
            continue
        g = p.add_argument_group(f"{m.name} options ({m.title})")
        for o in m.options:
            if o.flag in seen:
                continue
            seen[o.flag] = m.name
            g.add_argument(o.flag, dest=f"opt_{o.name}", default=None, metavar=o.metavar, help=f"{o.help} (default {o.shown(o.default)})")


def _add_settings(p: argparse.ArgumentParser, run_group, preset: str | None) -> None:
    """A flag for every run setting that has a command-line group (``config.setting``), made from its
    declaration: its type, what it takes, its help and its value in each preset."""
    from .config import GROUPS, PRESETS, SETTINGS, TRAINING, by_preset

    titles = {
        TRAINING: "sizes and training (override the preset; each says its value now and in every preset)",
        "evaluation": "evaluation (how outputs are scored)",
    }
    groups = {}
    for name, option in SETTINGS.items():
        where = GROUPS[name]
        if where is None:
            continue
        g = run_group if where not in titles else groups.setdefault(where, p.add_argument_group(titles[where]))
        if option.bare:
            g.add_argument(option.flag, dest=name, action="store_true", default=None, help=option.help)
            continue
        varies = len({repr(values.get(name, option.default)) for values in PRESETS.values()}) > 1
        shown = by_preset(name, preset) if varies else "" if option.default is None else f" (default {option.shown(option.default)})"
        kind = option.type if option.type in (int, float) else str
        g.add_argument(option.flag, dest=name, metavar=option.metavar, type=kind, help=option.help + shown)


def _method_options(args: argparse.Namespace, methods: list[str], saved: dict[str, dict] | None = None) -> dict[str, dict]:
    """Each method's options: those given as flags, over those of a ``--config`` run (else the preset's), over the
    defaults."""
    from .config import DEFAULT_PRESET, PRESETS
    from .methods import get_method

    below = saved if saved is not None else PRESETS[args.preset or DEFAULT_PRESET].get("method_options", {})
    out: dict[str, dict] = {}
    for name in methods:
        cls = get_method(name)
        given = {o.name: getattr(args, f"opt_{o.name}") for o in cls.options if getattr(args, f"opt_{o.name}", None) is not None}
        out[name] = cls.resolve_options({**below.get(name, {}), **given})
    return out


def config_from_args(args: argparse.Namespace, default_methods: str = "tl,jl"):
    """The run configuration of the command line: a preset (or the settings of ``--config``) with the options
    given. Data options not given are taken from ``--config`` too."""
    from .config import GROUPS, make_config
    from .methods import parse_methods
    from .runfolder import saved_settings

    saved, inputs = saved_settings(args.config) if getattr(args, "config", None) else (None, {})
    if saved is not None:
        if args.preset:
            raise UserError("--preset: not with --config, whose run's settings take the preset's place (override single settings instead)")
        for key in ("data", "clean_images", "recipe", "metric"):
            if getattr(args, key, None) is None and inputs.get(key) is not None:
                setattr(args, key, inputs[key])
    if getattr(args, "data", None) is not None:  # the folders hold the pairs: these options would be ignored
        for flag, value in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--benchmark", args.benchmark), ("--recipe", args.recipe)):
            if value is not None:
                raise UserError(f"{flag}: not with --data, whose folders hold the tasks and their pairs")
    if getattr(args, "clean_images", None) is not None and args.benchmark is not None:
        raise UserError("--benchmark: not with --clean-images, whose images and --recipe make the benchmark")
    methods = parse_methods(args.methods if args.methods is not None else (saved["methods"] if saved is not None else default_methods))
    overrides = {name: getattr(args, name) for name, where in GROUPS.items() if where is not None}
    options = _method_options(args, methods, saved.get("method_options") if saved is not None else None)
    benchmark = args.benchmark or (None if saved is not None else "restore4")
    return make_config(args.preset, base=saved, benchmark=benchmark, methods=methods, method_options=options, **overrides)


def seeds_from_args(args: argparse.Namespace) -> list[int] | None:
    """The seeds of ``--seeds``, or None for a run of one seed."""
    if getattr(args, "seeds", None) is None:
        return None
    from .seeds import parse_seeds

    if args.seed is not None:
        raise UserError("--seed: not with --seeds, which gives the seeds")
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise UserError("--seeds: not under torchrun with several processes; start one distributed run per --seed")
    return parse_seeds(args.seeds)


def tensorboard_from_args(args: argparse.Namespace) -> bool | None:
    """``--tensorboard``: True or False, or None (on when tensorboard is installed); a UserError if on and it is not."""
    if args.tensorboard is None:
        return None
    from .board import TENSORBOARD_MISSING, tensorboard_available
    from .options import parse_switch

    on = parse_switch("--tensorboard", args.tensorboard)
    if on and not tensorboard_available():
        raise UserError(f"--tensorboard on: {TENSORBOARD_MISSING}")
    return on


def cmd_run(args: argparse.Namespace) -> int:
    import shlex

    from rich.console import Console

    from .runner import run

    cfg = config_from_args(args)
    console = Console(stderr=False)
    board = tensorboard_from_args(args)
    kwargs = dict(
        console=console,
        device=args.device,
        restart=args.restart,
        command="assocgan " + shlex.join(args.argv),
        tensorboard=board,
        data=args.data,
        clean_images=args.clean_images,
        recipe=args.recipe,
        metric=args.metric,
    )
    seeds = seeds_from_args(args)
    if seeds is not None:
        from .seeds import run_seeds

        results = run_seeds(cfg, args.out, seeds, **kwargs)
    else:
        results = run(cfg, args.out, **kwargs)
    if results is not None:  # None: a process of several other than rank 0, which writes and prints nothing
        console.print(f"Results: {Path(args.out) / 'results.json'}")
    return 0


def cmd_benchmarks(args: argparse.Namespace) -> int:
    from .data.benchmarks import BUILTIN
    from .data.degradations import KINDS

    for name, spec in BUILTIN.items():
        print(f"{name} ({spec.metric.upper()}): {spec.description}")
        for i, (task, recipe) in enumerate(spec.tasks, 1):
            print(f"  T{i} {task:<12} {recipe}")
    print("\nRecipe degradations for --clean-images DIR --recipe ...:")
    for k, kind in KINDS.items():
        print(f"  {k:<12} {kind.degree}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS, methods_markdown

    if args.markdown:
        print(methods_markdown(), end="")
        return 0

    for m in METHODS.values():
        head = m.cite if m.cite.startswith(m.title) else f"{m.title}: {m.cite}"  # a citation that opens with the title says it once
        print(f"{m.name:<12} {head}" + (" [evaluated with the task id]" if m.needs_task_id else ""))
        for o in m.options:
            print(f"    {o.flag:<24} {o.shown(o.default):<10} {o.help}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .studies import rebuild_report, report_tables

    path = rebuild_report(args.folder)
    if args.markdown or args.latex:
        from .report.tables import to_latex, to_markdown

        render = to_latex if args.latex else to_markdown
        print("\n\n".join(render(t) for t in report_tables(args.folder)))
    else:
        print(path)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .translate import translate_files

    written = translate_files(
        args.run,
        args.inputs,
        args.out,
        method=args.method,
        after_task=args.after_task,
        task=args.task,
        mode=args.mode,
        tile=args.tile,
        device=args.device,
        console=Console(stderr=True),
        overwrite=args.overwrite,
    )
    print(f"{len(written)} image(s) written to {args.out}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import shlex

    from rich.console import Console

    from .jobs import job_options
    from .studies import STUDIES, make_study, run_study

    opts = job_options(
        args.executor,
        time_limit=args.time_limit,
        job_logs=args.job_logs,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        mem=args.mem,
        slurm_setup=args.slurm_setup,
        slurm_option=args.slurm_option,
    )
    kind = STUDIES[args.study]
    args.methods = kind.base_methods(args)
    cfg = config_from_args(args)
    study = make_study(
        args.study,
        cfg,
        args.out,
        **kind.options(args, cfg),
        bench_args={"data": args.data, "clean_images": args.clean_images, "recipe": args.recipe, "metric": args.metric},
        device=args.device,
        command="assocgan " + shlex.join(args.argv),
        seeds=seeds_from_args(args),
        tensorboard=tensorboard_from_args(args),
    )
    run_study(study, jobs=args.jobs, console=Console(), opts=opts)
    return 0


def _add_executor_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("executor (the runs as jobs of submitit, on this machine or a SLURM cluster)")
    g.add_argument(
        "--executor",
        choices=["local", "slurm"],
        help="local: submitit's processes on this machine (each its own GPU); slurm: one "
        "SLURM job a run. The study waits for its jobs and, interrupted, cancels them; run it again to go on (default: no executor)",
    )
    g.add_argument(
        "--time-limit",
        metavar="TIME",
        help="each job's limit: minutes (90) or as sbatch reads it (1:30:00, 2-00:00:00) (needed with slurm; default none locally)",
    )
    g.add_argument("--job-logs", metavar="DIR", help="submitit's job scripts and outputs (default OUT/jobs); each run's own log is OUT/runs/<name>/log.txt")
    g = p.add_argument_group("SLURM (with --executor slurm)")
    g.add_argument("--partition", metavar="NAME", help="sbatch --partition")
    g.add_argument("--account", metavar="NAME", help="sbatch --account")
    g.add_argument("--qos", metavar="NAME", help="sbatch --qos")
    g.add_argument("--gpus-per-job", metavar="N", type=int, help="GPUs of each job (sbatch --gpus-per-node; a run uses one; default none: CPU jobs)")
    g.add_argument("--cpus-per-job", metavar="N", type=int, help="CPUs of each job (sbatch --cpus-per-task); its torch threads unless --threads")
    g.add_argument("--mem", metavar="SIZE", help="memory of each job, as sbatch reads it: 32G")
    g.add_argument("--slurm-setup", metavar="CMD", action="append", help="a shell line run before each job, e.g. 'source ~/venv/bin/activate' (repeatable)")
    g.add_argument("--slurm-option", metavar="KEY=VALUE", action="append", help="any other sbatch option, without its dashes: constraint=a100 (repeatable)")


def _add_study_parser(sub, preset: str | None = None) -> None:
    from .studies import STUDIES

    sp = sub.add_parser("study", help="the paper's analyses: " + ", ".join(STUDIES))
    ssub = sp.add_subparsers(dest="study", required=True)
    for name, kind in STUDIES.items():
        p = ssub.add_parser(name, help=kind.help, description=f"Study {name}: {kind.help}. {kind.details}")
        if not kind.trains:  # it works on a finished run folder: its own arguments and command alone
            kind.add_arguments(p)
            p.set_defaults(fn=kind.work)
            continue
        _add_run_options(p, with_methods=kind.chooses_methods, methods=None, out=f"runs/study_{name}", preset=preset)
        g = p.add_argument_group("study")
        g.add_argument(
            "--jobs",
            metavar="N",
            type=int,
            default=None,
            help="runs at a time (default 1: in this process; with --executor slurm, every run at once); without --executor, N > 1 "
            "runs parallel worker processes sharing the cores, each with its own GPU when there are several",
        )
        kind.add_arguments(g)
        _add_executor_options(p)
        p.set_defaults(fn=cmd_study)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (the command, the error, where the help is) instead of the
    whole usage, which for ``run`` is forty lines of options."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def given_preset(argv: list[str]) -> str | None:
    """The ``--preset`` a command line gives, read before parsing it, so that --help shows that preset's values."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``preset``: the preset whose values each setting's --help shows first (default: the default preset)."""
    from . import __version__
    from .options import SWITCH_SPELLINGS

    p = Parser(prog="assocgan", description="Continual learning of image-to-image translation")
    p.add_argument("--version", action="version", version=f"assocgan {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "run",
        help="train methods on a benchmark and print the paper's tables",
        description="Train methods on a benchmark into --out. Methods already complete there are skipped; an interrupted one resumes where its training state was last saved.",
        epilog=f"N and K: whole numbers; X: a number; on|off: a switch ({SWITCH_SPELLINGS}).",
    )
    _add_run_options(r, preset=preset)
    r.add_argument("--restart", action="store_true", help="train the given methods from the start, discarding what --out holds of them")
    r.set_defaults(fn=cmd_run)
    sub.add_parser("benchmarks", help="list the built-in benchmarks and their tasks").set_defaults(fn=cmd_benchmarks)
    mp = sub.add_parser("methods", help="list the methods and their options")
    mp.add_argument("--markdown", action="store_true", help="print docs/methods.md")
    mp.set_defaults(fn=cmd_methods)
    _add_study_parser(sub, preset)
    from .translate import MODES

    tp = sub.add_parser(
        "translate",
        help="apply a trained generator of a run folder to your images",
        description="Translate image files with a generator a run trained (its checkpoint after a task); outputs are PNG files of the same names in --out.",
    )
    tp.add_argument("run", help="the run folder (its checkpoints/)")
    tp.add_argument("inputs", nargs="+", help="image files or folders of images")
    tp.add_argument("--out", required=True, help="folder for the outputs (<name>.png)")
    tp.add_argument("--method", help="the method whose generator is applied (needed when the run trained several)")
    tp.add_argument("--after-task", help="the generator as it stood after this task (name or 1-based position; default: the last)")
    tp.add_argument("--task", help="the task to answer for (name or 1-based position), for methods evaluated with the task identity (single, piggyback-ti)")
    tp.add_argument("--overwrite", action="store_true", help="replace output files that exist already in --out (an input image is never replaced)")
    tp.add_argument(
        "--mode",
        default="pad",
        choices=MODES,
        help="pad: whole image, mirrored up to a multiple of 16 (default); tile: overlapping tiles of --tile px, blended; fit: resized and centre-cropped to the trained size, as training images were",
    )
    tp.add_argument("--tile", type=int, help="tile size for --mode tile, a multiple of 16 (default: the trained image size)")
    tp.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    tp.set_defaults(fn=cmd_translate)
    rp = sub.add_parser("report", help="rebuild report.html (and plots) of a run or study folder from its files")
    rp.add_argument("folder")
    fmt = rp.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="then print the folder's tables as Markdown (to paste into a paper or a README)")
    fmt.add_argument("--latex", action="store_true", help="then print the folder's tables as LaTeX (booktabs: \\usepackage{booktabs})")
    rp.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(given_preset(argv)).parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argument error (one line, printed): its exit code
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    args.argv = argv
    return exit_code(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
