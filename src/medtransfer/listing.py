"""Tables the CLI prints, readable anywhere, and the same rows as JSON (``--json``).

Why not a plain rich table: rich shrinks every column to the terminal and cuts cells (``resn…``, ``fews…``), and
when output is not a terminal (CI, SLURM logs) it assumes 80 columns and cuts them just the same. Key columns (what
a person greps for or types next: backbone, method, regime, shots, fold) must never be cut, so:

- on a terminal wide enough for every key cell whole: a rich table; key columns keep their full width, the other
  columns wrap (fold) into the space left;
- otherwise (not a terminal, or a terminal too narrow even for that): a plain layout, columns aligned by spaces,
  one line per row and nothing cut, so that logs can be grepped (a narrow terminal wraps the long lines);
- ``--json``: the rows as a JSON array of objects with stable keys, numbers as numbers (NaN as null).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

# a column that is not a key wraps into no fewer than this many characters (fewer: the plain layout instead)
MIN_WRAPPED_WIDTH = 8


@dataclass(frozen=True)
class Column:
    name: str
    key: bool = False  # never cut nor wrapped
    justify: Literal["left", "right", "center"] = "left"


@dataclass
class Listing:
    """A table to print: display cells per row, and per row the record ``--json`` prints instead."""

    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)  # a rich style per row ("" for none); the plain layout has none
    caption: str = ""

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def add(self, cells: list[str] | tuple[str, ...], record: dict[str, Any], *, style: str = "") -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(tuple(str(c) for c in cells))
        self.records.append(record)
        self.styles.append(style)


def show(listing: Listing, console: Console) -> None:
    """Print ``listing`` as a rich table on a terminal wide enough for its key cells whole, else plainly."""
    table = rich_table(listing, console.width) if console.is_terminal else None
    if table is None:
        console.print(plain_text(listing), markup=False, highlight=False, soft_wrap=True, emoji=False)
    else:
        console.print(table)


def _natural_widths(listing: Listing) -> list[int]:
    """Widest cell per column; a multi-line cell counts its longest line (rich shows it on several lines; the
    plain layout joins them, so a row stays one line)."""
    return [max([cell_len(c.name), *(max(cell_len(part) for part in row[i].split("\n")) for row in listing.rows)])
            for i, c in enumerate(listing.columns)]


def rich_table(listing: Listing, width: int) -> Table | None:
    """The rich table, its column widths set so that no key cell is cut; None when ``width`` is too narrow."""
    natural = _natural_widths(listing)
    n = len(natural)
    frame = 3 * n + 1  # one space of padding either side of every cell, and n + 1 vertical rules
    widths = list(natural)
    if sum(natural) + frame > width:
        keys = [i for i, c in enumerate(listing.columns) if c.key]
        others = [i for i in range(n) if i not in keys]
        floor = {i: min(natural[i], MIN_WRAPPED_WIDTH) for i in others}
        room = width - frame - sum(natural[i] for i in keys)
        if not others or room < sum(floor.values()):
            return None
        spare, slack = room - sum(floor.values()), sum(natural[i] - floor[i] for i in others)
        for i in others:
            widths[i] = floor[i] + (spare * (natural[i] - floor[i])) // max(slack, 1)
    table = Table(title=listing.title or None, caption=listing.caption or None)
    for column, w in zip(listing.columns, widths, strict=True):
        table.add_column(column.name, justify=column.justify, no_wrap=column.key, overflow="fold", width=w,
                         min_width=w if column.key else None)
    for row, style in zip(listing.rows, listing.styles, strict=True):
        table.add_row(*row, style=style or None)
    return table


def plain_text(listing: Listing) -> str:
    """Title, header, a rule, one line per row with columns aligned by spaces (nothing cut), caption."""
    widths = _natural_widths(listing)

    def line(cells) -> str:
        parts = []
        for cell, w, column in zip(cells, widths, listing.columns, strict=True):
            pad = " " * (w - cell_len(cell))
            parts.append(pad + cell if column.justify == "right" else cell + pad)
        return "  ".join(parts).rstrip()

    lines = [listing.title] if listing.title else []
    lines += [line([c.name for c in listing.columns]), "  ".join("-" * w for w in widths)]
    lines += [line(tuple(" ".join(c.split()) if "\n" in c else c for c in row)) for row in listing.rows]
    if listing.caption:
        lines.append(listing.caption)
    return "\n".join(lines)


def _plain_value(value: Any) -> Any:
    """JSON-safe: numpy scalars become Python numbers, NaN and infinities null, containers recursed."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict, str)):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if type(value).__name__ == "NAType":  # pandas.NA
        return None
    if isinstance(value, dict):
        return {str(k): _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def to_json(records: list[dict[str, Any]]) -> str:
    """The rows as a JSON array (``--json``): strict JSON, every object with the same keys."""
    return json.dumps([_plain_value(r) for r in records], indent=1, allow_nan=False)
