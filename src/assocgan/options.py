"""The spellings of a switch (an on|off option) and the one reader of them: ``parse_switch``. The method
interface (``methods.base``), the run configuration (``config``) and the command line (``cli``) all read
switches, so the spellings live here, below all three, importing nothing of the package but ``errors``."""
from __future__ import annotations

from .errors import UserError


# the spellings a switch (an on|off option) accepts
SWITCH_ON = ("on", "true", "yes", "1")
SWITCH_OFF = ("off", "false", "no", "0")
SWITCH_SPELLINGS = "true/false, yes/no and 1/0 are accepted too"


def parse_switch(flag: str, value: str) -> bool:
    """An on|off option's value, in any of its spellings; a UserError naming ``flag`` otherwise."""
    if value.lower() not in SWITCH_ON + SWITCH_OFF:
        raise UserError(f"{flag}: {value!r} is not a switch value; give on or off ({SWITCH_SPELLINGS})")
    return value.lower() in SWITCH_ON
