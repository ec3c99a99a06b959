"""One name -> entry table for the backbone, probe-head and adapt-method registries.

Each registry refuses a second entry under a name (a silent overwrite would let one module replace another's
backbone, head or method unnoticed) and turns an unknown name into a user error that names the nearest known
ones (``did_you_mean``, shared by every name lookup) and lists them all.
It is a ``dict`` so that callers and tests keep reading it as one (``in``, ``.values()``, ``monkeypatch.setitem``).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Protocol, TypeVar

from medtransfer.errors import MedtransferError


def squash_name(name: str) -> str:
    """Case, dashes, underscores and dots do not tell names apart for a typo (``ResNet-18`` ~ ``resnet18``)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def nearest_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` known names closest to ``name``: exact matches once squashed first, then difflib's."""
    known = list(dict.fromkeys(known))
    squashed = {}
    for k in known:
        squashed.setdefault(squash_name(k), k)
    same = [k for k in known if squash_name(k) == squash_name(name)]
    close = difflib.get_close_matches(squash_name(name), list(squashed), n=n, cutoff=0.6)
    return list(dict.fromkeys([*same, *(squashed[c] for c in close)]))[:n]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean resnet18?)`` for an error message, or "" when no known name is close."""
    near = nearest_names(name, known)
    if not near:
        return ""
    return f" (did you mean {', '.join(near[:-1]) + ' or ' if len(near) > 1 else ''}{near[-1]}?)"


class Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(dict[str, T]):
    """Entries keyed by their ``name``; ``kind`` (e.g. "probe head") is how error messages call them."""

    def __init__(self, kind: str, *, sort_known: bool = False, known_suffix: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.sort_known = sort_known  # list known names sorted, else in registration order
        self.known_suffix = known_suffix  # what the "known:" list ends with, e.g. " or all"

    def add(self, entry: T) -> T:
        """Register ``entry``; a name registered twice is a programming error (ValueError)."""
        if entry.name in self:
            raise ValueError(f"{self.kind} {entry.name!r} registered twice")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> T:
        """The entry called ``name``; an unknown name is a user error naming the known ones."""
        if name not in self:
            known = sorted(self) if self.sort_known else list(self)
            raise MedtransferError(f"unknown {self.kind} {name!r}{did_you_mean(name, known)}; known: "
                                   f"{', '.join(known)}{self.known_suffix}")
        return self[name]


def import_entries(package: str, path: Iterable[str], first: tuple[str, ...] = ()) -> list[str]:
    """Import every module of an entries folder (``probe/heads``, ``adapt/methods``, ``backbones/families``), so
    that adding an entry is adding its file: the modules named in ``first`` in that order (the order listings and
    ``all`` follow), then any other in name order. Returns the module names imported."""
    found = sorted(module.name for module in pkgutil.iter_modules(path) if not module.name.startswith("_"))
    missing = [name for name in first if name not in found]
    if missing:
        raise ImportError(f"{package}: listed entries without a file: {', '.join(missing)}")
    order = [*first, *(name for name in found if name not in first)]
    for name in order:
        importlib.import_module(f"{package}.{name}")
    return order
