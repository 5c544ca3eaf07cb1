"""Continual-learning benchmark over several seeds: does the benchmark test forgetting, and how much of the
TL -> JL gap does each method close?

    python benchmarks/continual.py --benchmark restore4 --seeds 0,1,2 --out runs/bench/restore4
    python benchmarks/continual.py --benchmark tones3 --seeds 0,1,2 --methods tl,jl,single,assoc --out runs/bench/tones3
    python benchmarks/continual.py --recipe motion:9,noise:0.08+blur:1,lowlight:0.5 --out runs/bench/recipe
    python benchmarks/continual.py --chain sepia,posterize,emboss --out runs/bench/chain
    python benchmarks/continual.py --benchmark mixed4 --arch pix2pix --out runs/bench/mixed4-pix2pix

``--recipe`` without ``--clean-images`` builds the benchmark from the built-in *test* photos (copied to
``OUT/clean_images``) through the same path as a user's ``--clean-images`` folder. ``--chain`` writes a chain of
styles made from the built-in photos as a user's paired folders (``OUT/chain_data``) and runs on them as ``--data``.

Each seed is an ordinary run folder (``OUT/seed<k>``); methods already complete there are not run again. The seeds
are combined as ``assocgan run --seeds`` combines them (``assocgan.seeds``): ``OUT/results.json`` and
``OUT/report.html`` hold every cell and figure as mean ± sd, and ``assocgan report OUT`` rebuilds them.
``replay@assoc`` is raw replay given exactly the bytes Assoc-GAN keeps in the same seed (``--replay-bytes``).
Prints, side by side: per-seed final AVG / BWT / memory / train seconds, and over the seeds TL's BWT, the
JL - TL gap, the share of the gap each method closes, Assoc-GAN's memory as a share of JL's and its training
time as a multiple of TL's; and the competence checks: doing nothing, each task's specialist (``single``) and
JL per task, whether each specialist beats doing nothing by the margin (2 dB PSNR, any SSIM gain), whether JL
beats doing nothing on every task and ends within 1.5 dB of the specialists' mean, and whether TL forgets
(BWT -5 dB / -0.10 SSIM or worse). Writes ``OUT/summary.md`` and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assocgan.config import make_config
from assocgan.io import write_json, write_text
from assocgan.report.tables import Table, fmt_bytes, to_markdown, to_text
from assocgan.runfolder import RunFolder
from assocgan.runner import run, write_report_safely
from assocgan.seeds import combine, mean, sd, seed_dir

EQUAL_BYTES = "replay@assoc"


def chain_folder(filters: list[str], out: Path, size: int, n_train: int, n_test: int) -> Path:
    """A user's paired folders (``--data``) of a chain of styles made from the built-in photos: task k maps
    style k-1 (a photo for k = 1) to style k, as tones3 does with its own filters; ``n_train`` training and
    ``n_test`` test crops a task (train and test photos apart), written once."""
    import numpy as np
    from PIL import Image

    from assocgan.data import photos, tones

    root = out / "chain_data"
    if (root / ".complete").exists():
        return root
    for split, n in (("train", n_train), ("test", n_test)):
        versions = [photos.builtin_photos(split, photos.SHORT_SIDE * size)]
        for f in filters:
            versions.append([tones.FILTERS[f](im) for im in versions[-1]])
        for k, f in enumerate(filters):
            xs, ys = photos.aligned_crops([versions[k], versions[k + 1]], n, size, np.random.default_rng([k, split == "test"]))
            for side, imgs in (("A", xs), ("B", ys)):
                d = root / f"{k + 1}_{f}" / split / side
                d.mkdir(parents=True, exist_ok=True)
                for i, im in enumerate(imgs):
                    Image.fromarray(im.transpose(1, 2, 0)).save(d / f"{i:04d}.png")
    (root / ".complete").touch()
    return root


def bench_args(args) -> dict:
    """``run``'s data arguments: a clean-image folder and recipe, a chain of styles as paired folders, or
    nothing for a built-in benchmark."""
    if args.chain:
        cfg = make_config(args.preset)
        return {"data": str(chain_folder(args.chain.split(","), Path(args.out), cfg.size, cfg.n_train, cfg.n_test)), "metric": "ssim"}
    if not args.recipe:
        return {}
    folder = args.clean_images
    if folder is None:  # the built-in test photos, as a user's folder of clean images
        import shutil

        from assocgan.data import photos

        folder = Path(args.out) / "clean_images"
        folder.mkdir(parents=True, exist_ok=True)
        for f in photos.photo_files("test"):
            shutil.copyfile(f, folder / f.name)
    return {"clean_images": str(folder), "recipe": args.recipe}


def run_seed(args, seed: int, methods: list[str]) -> dict:
    out = seed_dir(args.out, seed)
    base = dict(benchmark=args.benchmark, seed=seed, threads=args.threads)
    data = bench_args(args)
    if args.steps:
        base["steps"] = args.steps
    if args.arch:
        base["arch"] = args.arch
    if args.ngf:
        base["ngf"] = args.ngf
    folder = RunFolder(out)
    done = (folder.read_results() or {}).get("methods", {})
    plain = [m for m in methods if m != EQUAL_BYTES and not done.get(m, {}).get("complete")]
    if plain:
        cfg = make_config(args.preset, methods=plain, **base)
        run(cfg, out, **data)
    if EQUAL_BYTES in methods and not done.get(EQUAL_BYTES, {}).get("complete"):
        res = folder.read_results()
        budget = res["methods"]["assoc"]["memory_bytes"]
        cfg = make_config(args.preset, methods=["replay"], method_options={"replay": {"replay_bytes": float(budget)}}, **base)
        tmp = out / "replay_equal_bytes"
        r2 = run(cfg, tmp, **data)
        res = folder.read_results()
        entry = dict(r2["methods"]["replay"])
        entry["title"] = f"replay at Assoc-GAN's bytes ({fmt_bytes(budget)})"
        res["methods"][EQUAL_BYTES] = entry
        folder.write_results(res)
    return folder.read_results()


MARGIN = {"psnr": 2.0, "ssim": 0.0}  # a specialist must beat doing nothing by more than this
JL_TO_SPECIALISTS = {"psnr": 1.5, "ssim": 0.05}  # JL ends within this of the specialists' mean
TL_BWT = {"psnr": -5.0, "ssim": -0.10}  # TL forgets at least this much: the benchmark tests forgetting


def competence(per_seed, seeds, methods, metric, fmt, summary) -> list[Table]:
    """Per task over the seeds: doing nothing, each specialist, JL and TL at the end; and the checks."""
    first = per_seed[seeds[0]]
    tasks = first["tasks"]
    ident = [mean([per_seed[s]["identity"][metric][j] for s in seeds]) for j in range(len(tasks))]
    final = {m: [[per_seed[s]["methods"][m]["matrix"][-1][j] for s in seeds] for j in range(len(tasks))] for m in ("single", "jl", "tl") if m in methods}
    rows = []
    for j, name in enumerate(tasks):
        row = [f"T{j + 1} {name}", fmt(ident[j])]
        for m in ("single", "jl", "tl"):
            if m in final:
                row.append(f"{fmt(mean(final[m][j]))} ± {fmt(sd(final[m][j]))}")
        rows.append(row)
    header = ["task", "input (do nothing)"] + [f"{m} final (mean ± sd)" for m in ("single", "jl", "tl") if m in final]
    out = [Table(f"Competence per task ({metric.upper()}, seeds {','.join(map(str, seeds))})", header, rows)]
    checks = []
    if "single" in final:
        gains = [mean(final["single"][j]) - ident[j] for j in range(len(tasks))]
        checks.append(
            (f"every specialist beats doing nothing by > {MARGIN[metric]:g}", min(gains) > MARGIN[metric], "gains " + ", ".join(fmt(g) for g in gains))
        )
    if "jl" in final:
        gains = [mean(final["jl"][j]) - ident[j] for j in range(len(tasks))]
        checks.append(("JL beats doing nothing on every task", min(gains) > 0, "gains " + ", ".join(fmt(g) for g in gains)))
        if "single" in final:
            jl_avg = mean([mean(v) for v in final["jl"]])
            sp_avg = mean([mean(v) for v in final["single"]])
            checks.append(
                (
                    f"JL within {JL_TO_SPECIALISTS[metric]:g} of the specialists' mean",
                    sp_avg - jl_avg <= JL_TO_SPECIALISTS[metric],
                    f"JL {fmt(jl_avg)}, specialists {fmt(sp_avg)}",
                )
            )
    if "tl" in methods:
        bwt = mean(summary["methods"]["tl"]["bwt"])
        checks.append((f"TL forgets (BWT {TL_BWT[metric]:g} or worse)", bwt <= TL_BWT[metric], f"BWT {fmt(bwt)}"))
    summary["checks"] = {name: {"ok": ok, "measured": what} for name, ok, what in checks}
    out.append(
        Table(
            "Checks: does the benchmark measure what it claims",
            ["check", "holds", "measured"],
            [[name, "yes" if ok else "NO", what] for name, ok, what in checks],
        )
    )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", default="restore4")
    p.add_argument("--recipe", help="a degradation recipe on --clean-images (default: the built-in test photos)")
    p.add_argument("--clean-images", help="a folder of clean images for --recipe")
    p.add_argument("--chain", help="style filters chained into paired folders (--data, SSIM), e.g. sepia,posterize,emboss")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=f"tl,jl,single,assoc,{EQUAL_BYTES}")
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=0, help="override the preset's steps per task")
    p.add_argument("--arch", default=None, help="override the preset's generator architecture (pix2pix, gated)")
    p.add_argument("--ngf", type=int, default=0, help="override the preset's generator width")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.out = args.out or f"runs/bench/{args.benchmark}"
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if EQUAL_BYTES in methods and "assoc" not in methods:
        p.error(f"{EQUAL_BYTES} needs assoc in --methods")
    per_seed = {s: run_seed(args, s, methods) for s in seeds}
    combined = combine(per_seed)  # OUT/results.json: every cell and figure as mean ± sd over the seeds
    write_json(Path(args.out) / "results.json", combined)
    write_report_safely(Path(args.out))
    metric = combined["metric"]
    fmt = (lambda v: "-" if v is None else f"{v:.2f}") if metric == "psnr" else (lambda v: "-" if v is None else f"{v:.3f}")

    name = f"recipe {args.recipe}" if args.recipe else f"chain {args.chain}" if args.chain else args.benchmark
    name += f", {combined['config'].get('arch', 'pix2pix')} generator" if "config" in combined else ""
    rows, summary = [], {"benchmark": name, "metric": metric, "seeds": seeds, "methods": {}}
    for m in methods:
        entry = combined["methods"][m]
        per = entry["per_seed"]
        fa, cpu = per["final_avg"], per["train_cpu_seconds"]
        summary["methods"][m] = {k: per[k] for k in ("final_avg", "bwt", "memory_bytes", "train_seconds", "train_cpu_seconds")}
        cpu_mean = entry["train_cpu_seconds"] if all(c is not None for c in cpu) else None  # not a mean of some seeds
        rows.append(
            [
                entry.get("title", m),
                f"{fmt(entry['final_avg'])} ± {fmt(entry['sd']['final_avg'])}",
                " ".join(fmt(v) for v in fa),
                fmt(entry["bwt"]),
                fmt_bytes(entry["memory_bytes"]),
                f"{entry['train_seconds']:.0f}",
                "-" if cpu_mean is None else f"{cpu_mean:.0f}",
            ]
        )
    table = Table(
        f"{name}, {args.preset} preset, seeds {args.seeds} ({metric.upper()})",
        ["method", "final AVG (mean ± sd)", "per seed", "BWT", "memory", "train s (wall)", "train s (CPU)"],
        rows,
    )

    figures = []
    if "tl" in methods and "jl" in methods:
        tl = [per_seed[s]["methods"]["tl"]["final_avg"] for s in seeds]
        jl = [per_seed[s]["methods"]["jl"]["final_avg"] for s in seeds]
        gap = mean(jl) - mean(tl)
        figures.append(("TL BWT (mean over seeds)", fmt(mean(summary["methods"]["tl"]["bwt"]))))
        figures.append(("JL final AVG - TL final AVG", fmt(gap)))
        summary["tl_bwt"], summary["jl_minus_tl"] = mean(summary["methods"]["tl"]["bwt"]), gap
        summary["gap_closed"] = {}
        for m in methods:
            if m in ("tl", "jl"):
                continue
            fa = mean(summary["methods"][m]["final_avg"])
            closed = (fa - mean(tl)) / gap if gap else None
            per = [(per_seed[s]["methods"][m]["final_avg"] - tl[i]) / (jl[i] - tl[i]) for i, s in enumerate(seeds) if jl[i] != tl[i]]
            summary["gap_closed"][m] = closed
            figures.append((f"{m}: share of the TL->JL gap closed", f"{100 * closed:.0f}% (per seed: {', '.join(f'{100 * c:.0f}%' for c in per)})"))
    if "assoc" in methods:
        if "jl" in methods:
            ratio = [per_seed[s]["methods"]["assoc"]["memory_bytes"] / per_seed[s]["methods"]["jl"]["memory_bytes"] for s in seeds]
            summary["assoc_memory_share_of_jl"] = mean(ratio)
            figures.append(("Assoc-GAN memory / JL memory", f"{100 * mean(ratio):.1f}%"))
        if "tl" in methods:
            for key, what in (("train_seconds", "wall"), ("train_cpu_seconds", "process CPU")):
                pairs = [(per_seed[s]["methods"]["assoc"].get(key), per_seed[s]["methods"]["tl"].get(key)) for s in seeds]
                tr = [a / b for a, b in pairs if a and b]
                if tr:
                    summary[f"assoc_{key}_over_tl"] = mean(tr)
                    figures.append((f"Assoc-GAN / TL training time ({what})", f"{mean(tr):.2f}x (per seed: {', '.join(f'{r:.2f}' for r in tr)})"))
        if EQUAL_BYTES in methods:
            a = mean(summary["methods"]["assoc"]["final_avg"])
            r = mean(summary["methods"][EQUAL_BYTES]["final_avg"])
            figures.append(("Assoc-GAN - replay at equal bytes (final AVG)", fmt(a - r)))
            summary["assoc_minus_replay_equal_bytes"] = a - r
    fig_table = Table("Figures", ["figure", "value"], [[k, v] for k, v in figures])
    tables = [table, fig_table] + competence(per_seed, seeds, methods, metric, fmt, summary)
    print("\n\n".join(to_text(t) for t in tables))
    cmd = "python benchmarks/continual.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_text(Path(args.out) / "summary.md", f"`{cmd}`\n\n" + "\n\n".join(to_markdown(t) for t in tables) + "\n")
    write_json(Path(args.out) / "summary.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
