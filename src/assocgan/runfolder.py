"""The run folder: the one place that knows its layout, reads and writes it, locks it, and says what in it is
complete and where an incomplete method resumes.

Layout (``--out DIR``)::

    results.json                       what the run measured, method by method (written after every task)
    log.txt                            one line per event (start, task done, resumed, failed), appended
    csv/<method>_<metric>.csv          the accuracy matrices, one per metric the run scores (--metrics)
    checkpoints/<method>/task<k>_<name>.safetensors   the generator after task k, with metadata
    samples/<method>/after_task<k>_<name>.png         sample grids; pictures/<method>/ the method's own
    state/<method>.pt                  the full training state of an incomplete method (deleted when complete)
    .lock                              there while a process writes the folder (it holds a flock on it)

Every file is written atomically (``io.atomic_write``): a run killed at any moment leaves each file whole, either
the old one or the new one. A method whose entry is complete is not trained again (``pending``); one that was
interrupted resumes from ``state/<method>.pt``, bit for bit on the same device.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError, is_whole_number
from .io import atomic_write, read_json, read_json_file, remove_partial_files, write_json, write_text
from .metrics import METRICS
from .results import BENCHMARK, COMPLETE, CONFIG, IDENTITY, INPUTS, MATRIX, METHODS, METRIC, OPTIONS, SCORED, TASKS, scored_metrics, version_problem

RESULTS = "results.json"
LOG = "log.txt"
SUBFOLDERS = ("csv", "checkpoints", "samples", "pictures", "state", "plots", "perceptual")  # what a run writes under its folder
LOCK = ".lock"
STATE_FORMAT = 2
STATE_MAGIC = b"assocgan-state\n"  # then the SHA-256 of the rest (32 bytes), then torch.save's bytes


def as_json(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples become lists), to compare settings with those stored."""
    return json.loads(json.dumps(obj))


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "run") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file, there while the body runs) while the body runs;
    a UserError at once if another process holds it. The lock is the kernel's (flock): a killed process releases
    it, so a rerun never finds a stale lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    while True:
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"{folder}: another {what} is writing to this folder ({holder}); wait for it to end or choose another --out") from None
        try:  # the holder before us may have removed the file between our open and our lock: lock the file that is there
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it
        fh.close()


class RunFolder:
    """One run's output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: is a file, not a folder")

    # ---- paths -----------------------------------------------------------------------------
    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    def checkpoint_dir(self, method: str) -> Path:
        return self.path / "checkpoints" / method

    def checkpoint_path(self, method: str, t: int, task: str) -> Path:
        """The generator after task ``t`` (0-based)."""
        return self.checkpoint_dir(method) / f"task{t + 1}_{task}.safetensors"

    def checkpoints(self, method: str) -> dict[int, Path]:
        """The method's generator checkpoints by task number (1-based)."""
        out = {}
        d = self.checkpoint_dir(method)
        for p in sorted(d.glob("task*_*.safetensors")) if d.is_dir() else []:
            head = p.name.split("_", 1)[0][4:]
            if is_whole_number(head):
                out[int(head)] = p
        return out

    def sample_path(self, method: str, t: int, task: str) -> Path:
        return self.path / "samples" / method / f"after_task{t + 1}_{task}.png"

    def picture_path(self, method: str, name: str) -> Path:
        return self.path / "pictures" / method / f"{name}.png"

    def state_path(self, method: str) -> Path:
        return self.path / "state" / f"{method}.pt"

    # ---- the lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """This process is the only one writing the folder while the body runs (see ``folder_lock``); what a
        killed writer left half written is removed first."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {self.path}: cannot create the folder ({e.strerror or e})") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UserError(f"--out {self.path}: the folder is not writable")
        with folder_lock(self.path):
            remove_partial_files(self.path, SUBFOLDERS)
            yield

    # ---- results ---------------------------------------------------------------------------
    def read_results(self) -> dict[str, Any] | None:
        """results.json, or None if there is none; a UserError naming the file if it is not a run's results."""
        path = self.results_path
        res = read_json_file(path, "a run's results", "move it away or choose another --out")
        if res is None:
            return None
        problem = results_problem(res)
        if problem:
            raise UserError(f"{path}: not the results of an assocgan run ({problem}); move it away or choose another --out")
        return res

    def write_results(self, results: dict[str, Any]) -> None:
        write_json(self.results_path, results)

    def write_csvs(self, results: dict[str, Any], name: str) -> None:
        entry = results[METHODS][name]
        for metric in scored_metrics(results):
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["after_task"] + results[TASKS])
            for i, row in enumerate(entry[metric]):
                w.writerow([results[TASKS][i]] + ["" if v is None else f"{v:.6f}" for v in row])
            write_text(self.path / "csv" / f"{name}_{metric}.csv", buf.getvalue())

    def check_settings(self, results: dict[str, Any], cfg) -> None:
        """A UserError if the folder's results were made with other shared settings than ``cfg``'s."""
        from .config import EVAL_BEFORE, upgrade_saved

        saved = upgrade_saved(results.get(CONFIG) or {})
        old = {**EVAL_BEFORE, **saved} if saved else {}  # a run older than the evaluation settings was scored thus
        new = as_json(cfg.shared_settings())
        diff = sorted(k for k in new if k in old and old[k] != new[k])
        if diff:
            what = ", ".join(f"{k} {old[k]!r} -> {new[k]!r}" for k in diff[:4])
            raise UserError(f"{self.results_path}: was made with other settings ({what}); choose another --out, or delete {self.path} to start over")

    def entry_state(self, results: dict[str, Any] | None, method: str, options: dict[str, Any]) -> str:
        """``"complete"``, ``"partial"`` (started, or failed) or ``"absent"``: ``method``'s entry in ``results``; a
        UserError if the entry was made with other ``options`` (``--restart`` trains it again with the new ones)."""
        entry = (results or {}).get(METHODS, {}).get(method)
        if entry is None:
            return "absent"
        given = as_json(options)
        if entry.get(OPTIONS) != given:
            raise UserError(
                f"{self.results_path}: holds {method} with other options ({entry.get(OPTIONS)} vs {given}); "
                "give --restart to train it again with these, or choose another --out"
            )
        return "complete" if entry.get(COMPLETE) else "partial"

    def pending(self, cfg) -> list[str]:
        """The methods of ``cfg`` not complete in this folder; a UserError if it was made otherwise."""
        from .methods import get_method

        results = self.read_results()
        if results is None:
            return list(cfg.methods)
        self.check_settings(results, cfg)
        options = {m: get_method(m).resolve_options(cfg.method_options.get(m, {})) for m in cfg.methods}
        return [m for m in cfg.methods if self.entry_state(results, m, options[m]) != "complete"]

    # ---- training state --------------------------------------------------------------------
    def save_state(self, method: str, state: dict[str, Any]) -> None:
        """``state`` as ``state/<method>.pt``: torch.save's bytes behind a header and their SHA-256, so that a
        file whose bytes were damaged is refused on resume instead of used."""
        import torch

        buf = io.BytesIO()
        torch.save({"format": STATE_FORMAT, **state}, buf)
        body = buf.getvalue()
        atomic_write(self.state_path(method), lambda p: p.write_bytes(STATE_MAGIC + hashlib.sha256(body).digest() + body))

    def load_state(self, method: str) -> dict[str, Any] | None:
        """The saved training state of ``method``, or None; a UserError if the file is damaged."""
        import torch

        path = self.state_path(method)
        if not path.exists():
            return None
        restart = f"give --restart to train {method} from the start"
        data = path.read_bytes()
        head = len(STATE_MAGIC)
        if not data.startswith(STATE_MAGIC):
            raise UserError(f"{path}: not a training state this version can resume; {restart}")
        body = data[head + 32 :]
        if hashlib.sha256(body).digest() != data[head : head + 32]:
            raise UserError(f"{path}: damaged: its bytes do not match the digest they were saved with; {restart}")
        try:
            state = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"{path}: cannot read the saved training state ({type(e).__name__}); {restart}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserError(f"{path}: not a training state this version can resume; give --restart to train {method} from the start")
        return state

    def clear_state(self, method: str) -> None:
        """Forget ``method``'s training state; ``state/`` itself goes when it holds nothing more."""
        path = self.state_path(method)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: another method's state is there
            path.parent.rmdir()

    def discard(self, method: str) -> None:
        """Forget everything of ``method`` (``--restart``): its entry, state, checkpoints, samples, pictures, CSVs."""
        results = self.read_results()
        if results is not None and method in results.get(METHODS, {}):
            del results[METHODS][method]
            self.write_results(results)
        self.clear_state(method)
        for d in (self.checkpoint_dir(method), self.path / "samples" / method, self.path / "pictures" / method):
            shutil.rmtree(d, ignore_errors=True)
        for metric in dict.fromkeys([*METRICS, *(scored_metrics(results) if results is not None else [])]):
            (self.path / "csv" / f"{method}_{metric}.csv").unlink(missing_ok=True)

    # ---- the log ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append one time-stamped line to log.txt (a log line is never worth failing a run for)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.path / LOG, "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError:
            pass


def saved_settings(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(configuration, data inputs) of an earlier run, for ``--config``: from a run folder, its results.json, or a
    study run's run.json; a UserError naming the file if it holds none."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS if (path / RESULTS).exists() else path / "run.json"
    if not path.is_file():
        raise UserError(f"--config {path}: not found (give a run folder, its results.json, or a study run's run.json)")
    try:
        saved = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: not valid JSON ({e})") from None
    cfg = saved.get(CONFIG) if isinstance(saved, dict) else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("methods"), list):
        raise UserError(f"--config {path}: holds no run configuration ('config' with its 'methods')")
    inputs = saved.get(INPUTS) or saved.get("bench_args") or {}
    return cfg, inputs if isinstance(inputs, dict) else {}


def results_problem(res: Any) -> str | None:
    """What makes ``res`` not a run's results.json (of a layout this version reads), or None."""
    if not isinstance(res, dict):
        return f"a JSON {type(res).__name__}, not an object"
    version = version_problem(res)
    if version:
        return version
    for key, kind in ((BENCHMARK, str), (METRIC, str), (TASKS, list), (METHODS, dict)):
        if not isinstance(res.get(key), kind):
            return f"'{key}' is missing or not a {kind.__name__}"
    if SCORED in res and not (isinstance(res[SCORED], list) and res[SCORED] and all(isinstance(m, str) for m in res[SCORED])):
        return f"'{SCORED}' must be a list of metric names"
    if not all(isinstance(t, str) for t in res[TASKS]):
        return f"'{TASKS}' must be a list of names"
    n = len(res[TASKS])
    identity = res.get(IDENTITY)
    if identity is not None and not (
        isinstance(identity, dict) and all(isinstance(v, list) and len(v) == n and all(_number(x) for x in v) for v in identity.values())
    ):
        return f"'{IDENTITY}' is not a score of doing nothing for each of the {n} tasks"
    for name, entry in res[METHODS].items():
        if not isinstance(entry, dict) or not isinstance(entry.get(MATRIX, []), list):
            return f"the entry of method {name!r} is not an object with a '{MATRIX}' list"
        matrix = entry.get(MATRIX, [])
        if len(matrix) > n:
            return f"the matrix of method {name!r} has {len(matrix)} rows for {n} tasks"
        for i, row in enumerate(matrix):  # after task i+1: a score of each task trained by then, None for the others
            if not isinstance(row, list) or len(row) not in (i + 1, n) or not all(_number(v) for v in row[: i + 1]):
                return f"row {i + 1} of method {name!r}'s matrix is not the scores of the {i + 1} tasks trained by then"
            if any(v is not None for v in row[i + 1 :]):
                return f"row {i + 1} of method {name!r}'s matrix scores a task not trained by then"
        for metric in scored_metrics(res):
            full = entry.get(metric, [])
            if (
                not isinstance(full, list)
                or len(full) > n
                or not all(isinstance(r, list) and len(r) == n and all(v is None or _number(v) for v in r) for r in full)
            ):
                return f"method {name!r}'s {metric} matrix is not rows of {n} numbers"
    return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300  # NaN compares False; a 10**400 int is no float
