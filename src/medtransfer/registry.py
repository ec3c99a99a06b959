"""One name -> entry table for the backbone, probe-head and adapt-method registries.

Each registry refuses a second entry under a name (a silent overwrite would let one module replace another's
backbone, head or method unnoticed) and turns an unknown name into a user error that lists the known ones.
It is a ``dict`` so that callers and tests keep reading it as one (``in``, ``.values()``, ``monkeypatch.setitem``).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from medtransfer.errors import MedtransferError


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
            raise MedtransferError(f"unknown {self.kind} {name!r}; known: {', '.join(known)}{self.known_suffix}")
        return self[name]
