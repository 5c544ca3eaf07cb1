"""A run: one benchmark x one or more methods x one seed, written to one output folder as it goes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__, distributed
from .board import TENSORBOARD_MISSING, TensorBoard, tensorboard_available
from .checkpoints import save_generator
from .config import RunConfig, upgrade_saved
from .data.benchmarks import Benchmark, benchmark_for, builtin_photos_note
from .devices import pick_device
from .distributed import SINGLE, Ranks
from .errors import RunFailed, UserError
from .evaluate import identity_scores, reference_gaps, summarize, test_size
from .methods import Method, get_method
from .metrics import load_metrics, set_metric_warnings
from .provenance import provenance
from .results import (
    AVG,
    BENCHMARK,
    FAILED,
    INPUTS,
    METHODS,
    METRIC,
    PROVENANCE,
    SEEDS,
    STEP,
    SUMMARY_FIGURES,
    TASK,
    TASKS,
    TASKS_LEFT_OUT,
    MethodEntry,
    Results,
)
from .runfolder import RunFolder
from .samples import save_samples
from .train import CurvePoint, Diverged, TaskRecord, check_amp, check_method, history, train_method


def new_results(bench: Benchmark, cfg: RunConfig) -> dict[str, Any]:
    convention = cfg.convention(bench.metric)
    identity = [identity_scores(t, convention) for t in bench.tasks]
    return Results(
        bench.name,
        bench.metric,
        bench.task_names,
        [t.description for t in bench.tasks],
        {m: [sc[m] for sc in identity] for m in convention.metrics},
        cfg.to_dict(),
        metrics=list(convention.metrics),
    ).to_json()


def run_inputs(bench_args: dict[str, Any]) -> dict[str, Any]:
    """The data a run was given, as results.json keeps it (folders as absolute paths)."""
    return {k: (str(Path(v).resolve()) if k in ("data", "clean_images") else v) for k, v in bench_args.items() if v is not None}


def load_results(folder: RunFolder, bench: Benchmark, cfg: RunConfig, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run folder's results, kept when they belong to the same benchmark, data, metric and settings (a
    UserError otherwise), else a fresh record."""
    old = folder.read_results()
    fresh = new_results(bench, cfg)
    if old is None:
        return fresh
    if SEEDS in old:
        raise UserError(
            f"{folder.results_path}: holds the combined results of seeds {', '.join(map(str, old[SEEDS]))}; "
            f"give --seeds to add to them, or choose another --out"
        )
    if old.get(BENCHMARK) != bench.name or old.get(TASKS) != bench.task_names:
        raise UserError(
            f"{folder.results_path}: holds a run of {old.get(BENCHMARK)} {old.get(TASKS)}; choose another --out for {bench.name} {bench.task_names}"
        )
    if old.get(METRIC) != bench.metric:
        raise UserError(
            f"{folder.results_path}: its methods are scored in {str(old.get(METRIC)).upper()}; "
            f"--metric {bench.metric} would mix the two in one table: give --metric {old.get(METRIC)}, or choose another --out"
        )
    old_inputs = {k: v for k, v in (old.get(INPUTS) or {}).items() if k != "metric"}  # --metric: checked above
    new_inputs = {k: v for k, v in (inputs or {}).items() if k != "metric"}
    if inputs is not None and old.get(METHODS) and old_inputs != new_inputs:
        what = ", ".join(
            f"--{k.replace('_', '-')} {old_inputs.get(k)} -> {new_inputs.get(k)}"
            for k in sorted(set(old_inputs) | set(new_inputs))
            if old_inputs.get(k) != new_inputs.get(k)
        )
        raise UserError(f"{folder.results_path}: was made from other data ({what}); choose another --out")
    folder.check_settings(old, cfg)
    fresh[METHODS] = old.get(METHODS, {})
    fresh[PROVENANCE] = old.get(PROVENANCE, [])
    fresh[INPUTS] = old.get(INPUTS, {})
    return fresh


def method_entry(
    bench: Benchmark, cls: type[Method], options: dict[str, Any], records: list[TaskRecord], curves: list[CurvePoint], metrics: Sequence[str] | None = None
) -> dict[str, Any]:
    """A method's entry of results.json from its task records, with a matrix in each of ``metrics`` (the run's
    scored metrics; by default those of the records)."""
    n = len(bench.tasks)
    if metrics is None:
        metrics = list(records[0].scores[0]) if records and records[0].scores else [bench.metric]
    full = {m: [[sc[m] for sc in r.scores] + [None] * (n - len(r.scores)) for r in records] for m in metrics}
    mat = full[bench.metric]
    trimmed = [row[: i + 1] for i, row in enumerate(mat)]
    initial = records[0].initial if records and records[0].initial else None
    initial_scores = {m: [sc[m] for sc in initial] if initial else None for m in metrics}
    ahead_scores = {m: [r.ahead[m] if r.ahead else None for r in records[: n - 1]] for m in metrics}
    curve = [{STEP: c.global_step, TASK: c.t, **{m: [sc[m] for sc in c.scores] for m in metrics}} for c in curves]
    s = (
        summarize(trimmed, ahead_scores[bench.metric], initial_scores[bench.metric], bench.metric, curve)
        if records
        else {**dict.fromkeys(SUMMARY_FIGURES), AVG: []}
    )
    last = records[-1].memory if records else {}
    routed = None  # with --router on: the matrices of the answers through the task router, and its accuracy
    if any(r.routed is not None for r in records):
        routed = {m: [[sc[m] for sc in r.routed or []] + [None] * (n - len(r.routed or [])) for r in records] for m in metrics}
    return MethodEntry(
        title=cls.title,
        cite=cls.cite,
        options=options,
        task_id_at_test=cls.needs_task_id,
        complete=len(records) == n,
        matrix=mat,
        **{k: s[k] for k in SUMMARY_FIGURES},
        initial=initial_scores,
        ahead=ahead_scores,
        memory_bytes=int(sum(last.values())),
        memory_breakdown=last,
        memory_by_task=[int(sum(r.memory.values())) for r in records],
        train_seconds=sum(r.train_seconds for r in records),
        train_seconds_by_task=[r.train_seconds for r in records],
        train_cpu_seconds=sum(r.cpu_seconds for r in records),
        scores=full,
        losses_by_task=[r.losses for r in records],
        curve=curve,
        routed=routed,
        router_accuracy=[r.router_accuracy for r in records] if routed is not None else None,
    ).to_json()


def checkpoint_meta(bench: Benchmark, cfg: RunConfig, cls: type[Method], t: int) -> dict[str, Any]:
    """What a generator checkpoint says about itself (see ``checkpoints``)."""
    return {
        "method": cls.name,
        "after_task": t + 1,
        "task": bench.tasks[t].name,
        "tasks": bench.task_names,
        "benchmark": bench.name,
        "metric": bench.metric,
        "needs_task_id": cls.needs_task_id,
        "config": cfg.to_dict(),
        "assocgan": __version__,
    }


def run(
    cfg: RunConfig,
    out: str | Path,
    bench: Benchmark | None = None,
    console=None,
    device: str | None = None,
    restart: bool = False,
    command: str | None = None,
    tensorboard: bool | None = None,
    **bench_args,
) -> dict[str, Any] | None:
    """Train every method of ``cfg`` on the benchmark, writing results, CSVs, checkpoints and sample grids to
    ``out`` after each task and the full training state every ``cfg.checkpoint_every`` steps; print the tables
    at the end. A method complete in ``out`` is skipped and an interrupted one resumes where its state was saved
    (``restart``: both are trained anew). A method that diverges is marked failed and the others go on; then
    ``RunFailed`` is raised. ``tensorboard``: write TensorBoard streams (``tb/<method>/``; None: when tensorboard is
    installed, True: a UserError if it is not). Returns the results record.

    Started by ``torchrun`` with several processes, each trains its share of every batch (``distributed``);
    rank 0 does all the above and returns the record, the others train alongside it and return None."""
    ranks, device = distributed.start(device)
    try:
        return _run(cfg, out, bench, console if ranks.main else None, device, restart, command, tensorboard, ranks, **bench_args)
    finally:
        distributed.stop(ranks)


def _run(
    cfg: RunConfig,
    out: str | Path,
    bench: Benchmark | None,
    console,
    device: str | None,
    restart: bool,
    command: str | None,
    tensorboard: bool | None = None,
    ranks: Ranks = SINGLE,
    **bench_args,
) -> dict[str, Any] | None:
    from .report.console import Progress, print_tables

    folder = RunFolder(out)
    if tensorboard and not tensorboard_available():
        raise UserError(f"--tensorboard on: {TENSORBOARD_MISSING}")
    board_on = tensorboard_available() if tensorboard is None else tensorboard
    dev = pick_device(device)
    check_amp(cfg, dev)
    ranks.check_batch(cfg.batch_size)
    earlier = folder.read_results() if ranks.main else None
    if earlier is not None and SEEDS not in earlier:  # before the data are made: a folder of other settings is refused at once
        folder.check_settings(earlier, cfg)
    note = None if bench is not None else builtin_photos_note(cfg.benchmark, cfg.size, cfg.n_train, cfg.n_test, **bench_args)
    if note and ranks.main:
        print(f"assocgan: warning: {note}", file=sys.stderr)
    bench = bench or benchmark_for(cfg, **bench_args)
    options = {name: get_method(name).resolve_options(cfg.method_options.get(name, {})) for name in cfg.methods}
    for name in cfg.methods:  # refuse a method that cannot run before training any
        check_method(name, bench, cfg)
    scored = cfg.scored_metrics(bench.metric)
    load_metrics(scored, cfg.weights_dir)  # a metric's missing weights fail here, in one line, before any training
    for warning in set_metric_warnings(scored, min(test_size(t) for t in bench.tasks)):  # too few test images for FID
        if ranks.main:
            print(f"assocgan: warning: {warning}", file=sys.stderr)
    if not ranks.main:
        return follow(bench, cfg, dev, ranks)
    say = (lambda s: console.print(s, markup=False, highlight=False)) if console is not None else (lambda s: None)
    failures: list[Diverged] = []
    with ranks.leading() as send_plan, folder.lock():
        results = load_results(folder, bench, cfg, run_inputs(bench_args))
        if restart:
            for name in cfg.methods:
                folder.discard(name)
                results[METHODS].pop(name, None)
        results[INPUTS] = run_inputs(bench_args)
        results[PROVENANCE] = results.get(PROVENANCE, []) + [provenance(command, dev, ranks.world)]
        if bench.left_out:
            results[TASKS_LEFT_OUT] = list(bench.left_out)
        folder.write_results(results)
        folder.log(f"start: {results[PROVENANCE][-1]['command']} (methods {', '.join(cfg.methods)}, device {dev})")
        if note:
            folder.log(f"warning: {note}")
        if bench.left_out:
            note = f"--order {cfg.order}: runs {len(bench.tasks)} of the {len(bench.tasks) + len(bench.left_out)} tasks; left out: {', '.join(bench.left_out)}"
            say(f"note: {note}")
            folder.log(note)
        todo = []
        for name in cfg.methods:
            if folder.entry_state(results, name, options[name]) == "complete":
                say(f"{name}: complete in {folder.path}, skipped (--restart trains it again)")
                folder.clear_state(name)
            else:
                todo.append(name)
        states = {name: checked_state(folder, name, cfg, options[name], len(bench.tasks)) for name in todo}
        send_plan((todo, states))
        if todo and tensorboard is None and not board_on:
            say(f"note: no TensorBoard logs: {TENSORBOARD_MISSING}")
        last_report = time.monotonic()
        total = len(todo) * len(bench.tasks) * cfg.steps
        tb = None
        try:
            with Progress(console, total) as progress:
                for name in todo:
                    state = states[name]
                    records, curves = history(state)
                    cls = get_method(name)
                    progress.start_method(name)
                    done_steps = None if state is None else state["task"] * cfg.steps + state["step"]
                    tb = TensorBoard(folder.path / "tb" / name, name, done_steps, board_on)
                    if state is None:
                        tb.start(cfg, options[name], bench.metric)
                    if state is not None:
                        progress.advance(done_steps)
                        where = f"task {state['task'] + 1} ({bench.tasks[state['task']].name}) step {state['step']}"
                        say(f"{name}: resuming at {where} from {folder.state_path(name)}")
                        folder.log(f"{name}: resumed at {where}")

                    def on_task(rec: TaskRecord, name=name, cls=cls, records=records, curves=curves, tb=tb) -> None:
                        records.append(rec)
                        results[METHODS][name] = method_entry(bench, cls, options[name], records, curves, scored)
                        reference_gaps(results)
                        folder.write_results(results)
                        folder.write_csvs(results, name)
                        save_generator(folder.checkpoint_path(name, rec.t, bench.tasks[rec.t].name), rec.generator, checkpoint_meta(bench, cfg, cls, rec.t))
                        save_samples(folder, name, bench, rec, cfg.sample_images, dev, tb, (rec.t + 1) * cfg.steps, cfg.convention(bench.metric))
                        progress.task_done(name, rec, bench)
                        folder.log(
                            f"{name}: task {rec.t + 1}/{len(bench.tasks)} {bench.tasks[rec.t].name} done in {rec.train_seconds:.1f} s; "
                            + " ".join(f"{sc[bench.metric]:.4g}" for sc in rec.scores)
                        )

                    try:

                        def on_curve(c: CurvePoint, curves=curves, tb=tb) -> None:
                            curves.append(c)
                            if c.global_step != (c.t + 1) * cfg.steps:  # a task's end: the training loop logs its scores
                                tb.eval_scores(bench, c.scores, c.global_step)

                        train_method(
                            name,
                            bench,
                            cfg,
                            device=dev,
                            on_task=on_task,
                            on_step=progress.advance,
                            on_curve=on_curve,
                            log=tb.scalar,
                            resume=state,
                            on_state=lambda st, name=name: folder.save_state(name, {**st, "settings": state_settings(cfg, options[name])}),
                            ranks=ranks,
                        )
                    except Diverged as e:
                        failures.append(e)
                        entry = method_entry(bench, cls, options[name], records, curves, scored)
                        entry[FAILED] = {"task": e.t + 1, "task_name": e.task, "step": e.step, "reason": e.what}
                        results[METHODS][name] = entry
                        reference_gaps(results)
                        folder.write_results(results)
                        folder.log(f"{name}: FAILED: {e}")
                        print(f"assocgan: {e}", file=sys.stderr)
                        tb.close()
                        continue
                    tb.end(results[METHODS][name], len(bench.tasks) * cfg.steps)
                    tb.close()
                    folder.clear_state(name)
                    if name != todo[-1] and time.monotonic() - last_report > REPORT_EVERY:
                        write_report_safely(folder.path)  # a long run has a report of the methods done so far
                        last_report = time.monotonic()
        finally:
            if tb is not None:
                tb.close()
        print_tables(results, console)
        path = write_report_safely(folder.path)
        folder.log("end" + (f": {len(failures)} method(s) failed" if failures else ""))
    if path is not None and console is not None:
        console.print(f"\nReport: {path}")
    if failures:
        raise RunFailed(
            f"{len(failures)} method(s) failed ({', '.join(e.method for e in failures)}: diverged); the results of the others are in {folder.results_path}"
        )
    return results


def follow(bench: Benchmark, cfg: RunConfig, dev: torch.device, ranks: Ranks) -> None:
    """A process other than rank 0: train the methods rank 0 trains, from the states it resumes, writing nothing.
    The settings and states come from rank 0 (None: it stopped before training, with its message)."""
    plan = ranks.broadcast(None)
    if plan is None:
        raise SystemExit(1)
    todo, states = plan
    for name in todo:
        try:
            train_method(name, bench, cfg, device=dev, resume=states[name], ranks=ranks)
        except Diverged:
            continue  # rank 0 says so and goes on with the next method
    return None


REPORT_EVERY = 60.0  # seconds: while methods remain, report.html is rewritten after a method at most this often


def state_settings(cfg: RunConfig, options: dict[str, Any]) -> dict[str, Any]:
    """The settings a saved training state belongs to: the run's shared settings and the method's options."""
    router = {"router": True} if cfg.router else {}  # the router's state is part of the training state (a state saved before the setting: off)
    return json.loads(json.dumps({"shared": cfg.shared_settings(), "options": options, **router}))


def state_problem(state: dict[str, Any], n_tasks: int, cfg: RunConfig) -> str | None:
    """What makes a saved training state one the loop cannot resume from as it was saved, or None: where it
    stands (task, step, the steps done) and what it holds for that place (a record per finished task, the
    optimisers of an interrupted task)."""

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    t, s, done = state.get("task"), state.get("step"), state.get("global_step")
    if not (whole(t) and 0 <= t < n_tasks):
        return f"task {t!r} is not one of the run's tasks 0-{n_tasks - 1}"
    if not (whole(s) and 0 <= s < cfg.steps):
        return f"step {s!r} is not within a task of {cfg.steps} steps"
    if not (whole(done) and done == t * cfg.steps + s):
        return f"{done!r} steps done, not the {t * cfg.steps + s} of task {t + 1} step {s}"
    if not isinstance(state.get("records"), list) or len(state["records"]) != t:
        return f"{len(state['records']) if isinstance(state.get('records'), list) else 'no'} task records for {t} finished tasks"
    for key in ("G", "D", "method_state", "rng"):
        if not isinstance(state.get(key), dict):
            return f"'{key}' is missing"
    if s > 0:
        n_opt = 2 if cfg.lambda_adv > 0 else 1
        for key in ("optimizers", "schedules"):
            if not isinstance(state.get(key), list) or len(state[key]) != n_opt:
                return f"'{key}' does not hold the {n_opt} of an interrupted task"
    return None


def checked_state(folder: RunFolder, name: str, cfg: RunConfig, options: dict[str, Any], n_tasks: int) -> dict[str, Any] | None:
    """The saved training state of ``name`` if there is one; a UserError if it was saved with other settings
    or is damaged."""
    state = folder.load_state(name)
    if state is None:
        return None
    settings = state.get("settings") or {}
    if isinstance(settings.get("shared"), dict):  # a state saved when --amp was a switch means bf16 or off
        settings = {**settings, "shared": upgrade_saved(settings["shared"])}
    if state.get("method") != name or settings != state_settings(cfg, options):
        raise UserError(f"{folder.state_path(name)}: was saved with other settings than this run's; give --restart to train {name} from the start")
    problem = state_problem(state, n_tasks, cfg)
    if problem is not None:
        raise UserError(f"{folder.state_path(name)}: damaged ({problem}); give --restart to train {name} from the start")
    return state


def write_report_safely(out: Path) -> Path | None:
    """Plots and report.html of a run folder; a failure is reported, never raised: the results are written."""
    try:
        from .report.html import write_report

        return write_report(out)  # plots/ (forgetting curves, memory, time, ...) and report.html
    except Exception as e:
        print(f"assocgan: report.html not written ({type(e).__name__}: {e}); rebuild it with `assocgan report {out}`", file=sys.stderr)
        return None
