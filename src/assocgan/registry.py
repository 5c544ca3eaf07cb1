"""Registries found from files: a package whose every module may define one or more registered classes (the
methods, the study kinds). A class is registered by setting ``name``; one without a name is not (a base, or
one not finished)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def discover(package: str, path: Iterable[str], base: type, order: tuple[str, ...], skip: tuple[str, ...] = ("base",), what: str = "name") -> dict[str, type]:
    """Every subclass of ``base`` with a ``name`` defined in the modules of ``package`` found on ``path`` (its
    ``__path__``; modules in ``skip`` and those starting with ``_`` left out), by name, in the order of ``order``
    then by name. Two classes of one name are an error naming it."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(path):
        if info.name in skip or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, base) and obj.name and obj.__module__ == module.__name__:
                if obj.name in found:
                    raise RuntimeError(f"{what} name {obj.name!r} defined twice")
                found[obj.name] = obj
    rank = {n: i for i, n in enumerate(order)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(order)), kv[0])))
