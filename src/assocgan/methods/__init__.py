"""Continual-learning methods, one file each, on the shared training loop. ``METHODS`` lists those that work."""
from __future__ import annotations

from ..errors import UserError
from .base import Context, Method, Option, Step
from .jl import JL
from .tl import TL

METHODS: dict[str, type[Method]] = {m.name: m for m in (TL, JL)}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"--methods: unknown method {name!r}; available: {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(spec: str | list[str]) -> list[str]:
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise UserError("--methods: give at least one method")
    for n in names:
        get_method(n)
    if len(set(names)) != len(names):
        raise UserError(f"--methods: a method is named twice in {','.join(names)}")
    return names


__all__ = ["METHODS", "Method", "Option", "Context", "Step", "get_method", "parse_methods"]
