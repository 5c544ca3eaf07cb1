"""Options declared once: ``Option`` is one setting's name, default, help, choices and bounds, and the one
reader and checker of its values. A method's options (``methods.base``) and the run settings
(``config.RunConfig``) are both declared with it; the command line (``cli``) is generated from those
declarations. The spellings of a switch (an on|off option) and their reader ``parse_switch`` live here too,
below all three, importing nothing of the package but ``errors``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


def _number(v: float) -> str:
    """A bound as a message spells it: whole numbers with thousands separators, others in ``g`` form."""
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


@dataclass(frozen=True)
class Option:
    """One option: ``name`` in Python (``assoc_ratio``), flag ``--assoc-ratio``; its default, its help, and what
    values it takes (choices, or a number's bounds)."""

    name: str
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None  # a number must be at least this (above it with ``open_low``)
    high: float | None = None  # and at most this (below it with ``open_high``)
    open_low: bool = False
    open_high: bool = False
    kind: type | None = None  # the value's type where the default does not say it (a default of None)
    meta: str | None = None  # what the flag takes, for --help, where the type's letter would say less (K: steps)
    note: str = ""  # what a bound means, said after it in an error ("(all cores)" after 0)
    bare: bool = False  # a flag without a value (--eval-full), for a switch whose default is off

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    @property
    def metavar(self) -> str:
        """What the flag takes, for ``--help``: on|off, the choices, N (a whole number), X (a number) or TEXT."""
        if self.meta is not None:
            return self.meta
        if self.choices is not None:
            return "|".join(map(str, self.choices))
        if self.type is bool:
            return "on|off"
        return {int: "N", float: "X"}.get(self.type, "TEXT")

    def shown(self, value: Any) -> str:
        """``value`` as the command line spells it (a switch as on or off, a number in ``g`` form)."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def read(self, value: Any) -> Any:
        """``value`` as the command line gives it (a string) in the option's type; other values as they are."""
        kind = self.type
        if isinstance(value, str) and kind in (bool, int, float):
            try:
                return parse_switch(self.flag, value) if kind is bool else kind(value)
            except ValueError:
                raise UserError(f"{self.flag}: {value!r} is not a valid {kind.__name__}") from None
        return value

    def parse(self, value: Any) -> Any:
        """``value`` (as given on the command line, or already typed) read and checked."""
        value = self.read(value)
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        """A UserError naming the flag and what is wrong, unless ``value`` is one this option takes."""
        if value is None and self.default is None:
            return
        if self.choices is not None and value not in self.choices:
            raise UserError(
                f"{self.flag} {value}: choose {', '.join(map(str, self.choices[:-1]))} or {self.choices[-1]}"
                if len(self.choices) > 1
                else f"{self.flag} {value}: must be {self.choices[0]}"
            )
        if self.type is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise UserError(f"{self.flag} {value!r}: must be a whole number")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if not math.isfinite(value):
            raise UserError(f"{self.flag} {value}: must be a finite number")
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        above = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if not (below or above):
            return
        low, high = (_number(self.low) + self.note if self.low is not None else None), (_number(self.high) if self.high is not None else None)
        if self.open_low or self.open_high:
            if low is not None and high is not None:
                want = f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"
            else:
                want = f"above {low}" if low is not None else f"below {high}"
        elif low is not None and high is not None:
            want = f"{low} to {high}"
        else:
            want = f"at least {low}" if low is not None else f"at most {high}"
        raise UserError(f"{self.flag} {self.shown(value)}: must be {want}")
