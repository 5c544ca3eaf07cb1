"""The errors a command ends with, and the one place where they become exit codes: bad input (UserError) exits
with code 2 and one line, a run with a failed method (RunFailed) with 1, an interrupt with 130."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable

INTERRUPTED = 130  # the exit code of an interrupted command (128 + SIGINT)


class UserError(Exception):
    """Bad input from the user (a file, a folder, an option). The message names it and says what is wrong."""


class RunFailed(Exception):
    """A run ended with a method that failed (diverged); the others' results are written."""


def exit_code(command: Callable[[], int]) -> int:
    """``command()``'s exit code, or that of the error it ends with, its message printed to stderr as one line."""
    try:
        return command()
    except UserError as e:
        print(f"assocgan: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"assocgan: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("assocgan: interrupted; results written so far are kept", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader of the output went away (`assocgan methods | head`): nothing to report
        try:  # stdout's buffered rest would fail again at exit: send it nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass
        return 1
    except OSError as e:  # a file that cannot be written or read (a read-only folder, a full disk): named, in one line
        if e.filename is None:
            raise
        print(f"assocgan: error: {e.filename}: {e.strerror or e}; choose another --out, or free the space (results written so far are kept)", file=sys.stderr)
        return 2


def is_whole_number(text: str) -> bool:
    """True when ``int(text)`` reads ``text``: ASCII digits only (``str.isdigit`` accepts '²', which int refuses)."""
    return text.isascii() and text.isdecimal()
