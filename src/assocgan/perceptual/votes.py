"""The votes of a perceptual study, in SQLite (``RUN_DIR/perceptual/votes.sqlite``), and their count.

One row per vote: participant, group, task, the method chosen, the order the methods were shown in (left to
right), and the time. Each vote is one transaction, so a crash loses no vote that was answered as recorded;
``UNIQUE (participant, group_id)`` makes a second vote on the same group (a replay, a double click, a second
browser) fail instead of counting twice. The database runs in WAL mode so that readers (the report) never
block voters.

What a participant sees follows from the study's seed and the participant's id alone: the order of the
groups (``sequence``) and the order of the methods within a group (``shown_order``), so a reload or a
return shows the same thing and a vote names a position that the server maps back to its method.
"""

from __future__ import annotations

import json
import math
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import read_json
from ..results import METHODS, TASK_ID_AT_TEST, TITLE
from .groups import FOLDER, StudyGroups, load_groups
from .votecount import DB, count_votes

MAX_NAME = 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    token TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    participant INTEGER NOT NULL REFERENCES participants(id),
    group_id INTEGER NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    shown_order TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (participant, group_id)
);
"""


class Rejected(Exception):
    """A request that changes nothing: ``status`` is its HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Participant:
    id: int
    name: str
    token: str


def sequence(seed: int, participant: int, group_ids: list[int]) -> list[int]:
    """The order in which ``participant`` sees the groups."""
    ids = sorted(group_ids)
    random.Random(f"perceptual-sequence:{seed}:{participant}").shuffle(ids)
    return ids


def shown_order(seed: int, participant: int, group_id: int, methods: list[str]) -> list[str]:
    """The methods of a group as ``participant`` sees them, left to right."""
    out = list(methods)
    random.Random(f"perceptual-order:{seed}:{participant}:{group_id}").shuffle(out)
    return out


def clean_name(name: Any) -> str:
    """A participant's name or code as typed, trimmed; a Rejected if empty, too long or not printable."""
    if not isinstance(name, str):
        raise Rejected(400, "name: give a name or code")
    name = " ".join(name.split())
    if not name:
        raise Rejected(400, "name: give a name or code")
    if len(name) > MAX_NAME or not name.isprintable():
        raise Rejected(400, f"name: at most {MAX_NAME} printable characters")
    return name


class Store:
    """The votes of one prepared study. Every method opens its own connection: safe from any thread."""

    def __init__(self, study: StudyGroups):
        self.study = study
        self.path = study.folder / DB
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: not a votes database that can be read ({e}); move it away to start the study's votes afresh") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def join(self, name: Any) -> Participant:
        """A new participant of this name, with a secret code of its own; or, given a participant's code, that
        participant (coming back resumes). A name already taken is refused: the name is no credential, so that
        nobody votes as someone else by typing their name."""
        name = clean_name(name)
        with self._transaction() as db:
            row = db.execute("SELECT id, name, token FROM participants WHERE token = ?", (name,)).fetchone()
            if row is not None:
                return Participant(*row)
            if db.execute("SELECT 1 FROM participants WHERE name = ?", (name,)).fetchone() is not None:
                raise Rejected(409, f"the name {name!r} is taken: to go on with your votes, type the code your pages show, or choose another name")
            token = secrets.token_urlsafe(12)
            cur = db.execute("INSERT INTO participants (name, token, created) VALUES (?, ?, ?)", (name, token, time.time()))
            return Participant(cur.lastrowid, name, token)

    def participant(self, token: str) -> Participant | None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token or ""):
            return None
        db = self._connect()
        try:
            row = db.execute("SELECT id, name, token FROM participants WHERE token = ?", (token,)).fetchone()
        finally:
            db.close()
        return None if row is None else Participant(*row)

    def voted(self, p: Participant) -> set[int]:
        db = self._connect()
        try:
            return {r[0] for r in db.execute("SELECT group_id FROM votes WHERE participant = ?", (p.id,))}
        finally:
            db.close()

    def next_group(self, p: Participant) -> tuple[int | None, int]:
        """(the next group ``p`` has not voted on, or None when done; how many groups ``p`` has voted on)."""
        done = self.voted(p)
        nxt = next((g for g in self.sequence(p) if g not in done), None)
        return nxt, len(done)

    def sequence(self, p: Participant) -> list[int]:
        return sequence(self.study.seed, p.id, [g.id for g in self.study.groups])

    def order(self, p: Participant, group_id: int) -> list[str]:
        return shown_order(self.study.seed, p.id, group_id, self.study.methods)

    def vote(self, p: Participant, group_id: Any, choice: Any) -> str:
        """Record that ``p`` found the output at position ``choice`` (1-based, as shown) of group ``group_id``
        the most realistic; returns the method. A Rejected (nothing written) for an unknown group, a position
        that was not shown, or a group ``p`` has already voted on."""
        group = self.study.by_id.get(_integer(group_id, "group"))
        if group is None:
            raise Rejected(404, f"group {group_id}: no such group")
        order = self.order(p, group.id)
        slot = _integer(choice, "choice")
        if not 1 <= slot <= len(order):
            raise Rejected(400, f"choice {choice!r}: not a position shown (1-{len(order)})")
        method = order[slot - 1]
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO votes (participant, group_id, task, method, shown_order, created) VALUES (?, ?, ?, ?, ?, ?)",
                    (p.id, group.id, group.task_name, method, json.dumps(order), time.time()),
                )
        except sqlite3.IntegrityError:
            raise Rejected(409, f"group {group.id}: already voted on") from None
        return method


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise Rejected(400, f"{what}: {value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        return int(value)
    raise Rejected(400, f"{what}: {value!r} is not a number")


# ---- counting ---------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``k / n`` (95% by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def tally(run_dir: str | Path) -> dict[str, Any] | None:
    """Each method's share of the votes per task (and over all tasks), with the number of votes and a 95%
    Wilson interval: the numbers of the paper's Table 4. None where the run folder has no votes."""
    study = load_groups(run_dir)
    path = Path(run_dir) / FOLDER / DB
    if study is None or not path.exists() or count_votes(study.folder) == 0:
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT task, method, COUNT(*) FROM votes GROUP BY task, method").fetchall()
        participants = db.execute("SELECT COUNT(DISTINCT participant) FROM votes").fetchone()[0]
    finally:
        db.close()
    counts = {(task, method): n for task, method, n in rows}
    columns = study.tasks + [None]  # None: all tasks
    totals = [sum(n for (task, _), n in counts.items() if c is None or task == c) for c in columns]
    cells = {}
    for m in study.methods:
        ks = [sum(n for (task, method), n in counts.items() if method == m and (c is None or task == c)) for c in columns]
        cells[m] = [{"k": k, "n": n, "share": k / n if n else None, "interval": list(wilson(k, n)) if n else None} for k, n in zip(ks, totals)]
    per_task = {t: sum(1 for g in study.groups if g.task_name == t) for t in study.tasks}
    entries = (read_json(Path(run_dir) / "results.json") or {}).get(METHODS, {})
    titles = {m: {k: entries.get(m, {}).get(k) for k in (TITLE, TASK_ID_AT_TEST)} for m in study.methods}
    return {
        "benchmark": study.benchmark,
        "tasks": study.tasks,
        "methods": study.methods,
        "titles": titles,
        "cells": cells,
        "totals": totals,
        "participants": participants,
        "groups": len(study.groups),
        "groups_per_task": [per_task[t] for t in study.tasks],
        "show_target": study.show_target,
    }
