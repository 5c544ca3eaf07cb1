"""Where a perceptual study's votes database lies (``RUN_DIR/perceptual/votes.sqlite``) and how many votes it
holds. Preparing a study (``groups.prepare``) reads the count to refuse a change of design once votes exist, and
the votes themselves (``votes``) are stored in that database, so the name and the count live here, below both,
importing nothing of the package but ``errors``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import UserError

DB = "votes.sqlite"


def count_votes(folder: Path) -> int:
    """How many votes ``folder`` (RUN_DIR/perceptual) holds; 0 without a database."""
    if not (folder / DB).exists():
        return 0
    db = sqlite3.connect(f"file:{folder / DB}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # a database without the table yet
            return 0
        raise UserError(f"{folder / DB}: not a votes database that can be read ({e}); move it away to start the study's votes afresh") from None
    except sqlite3.DatabaseError as e:
        raise UserError(f"{folder / DB}: not a votes database that can be read ({e}); move it away to start the study's votes afresh") from None
    finally:
        db.close()
