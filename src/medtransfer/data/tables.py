"""Read the label tables that ship beside images: CSV, TSV or Excel (XLSX through openpyxl), one or several."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medtransfer.errors import MedtransferError

# How tables write a missing value: pandas' default ``na_values`` for ``read_csv`` (https://pandas.pydata.org/docs/
# reference/api/pandas.read_csv.html, "By default the following values are interpreted as NaN"). Tables are read
# as text (``keep_default_na=False``, so an id ``NA`` stays an id); a *label* spelled so is missing, not a class.
MISSING_VALUES = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
})


def is_missing(value: object) -> bool:
    """True for an empty cell, a null, or a text spelling of a missing value (``NaN``, ``NA``, ``null``, ...)."""
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() in MISSING_VALUES


def read_label_table(path: str | Path) -> pd.DataFrame:
    """Every cell as text (ids such as ``007`` keep their zeros), empty cells as empty strings."""
    path = Path(path)
    if not path.is_file():
        raise MedtransferError(f"label table not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in {".xlsx", ".xlsm", ".xls"}:
            table = pd.read_excel(path, dtype=str)
        elif suffix == ".tsv":
            table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        elif suffix in {".csv", ".txt"}:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in {".parquet", ".pq"}:
            table = pd.read_parquet(path).astype(str)
        else:
            raise MedtransferError(f"label table {path.name}: unsupported format {suffix!r}; use CSV, TSV or XLSX")
    except MedtransferError:
        raise
    except ImportError as exc:
        raise MedtransferError(f"cannot read {path.name}: {exc} (XLSX needs openpyxl: pip install openpyxl)") from exc
    except Exception as exc:  # pandas and openpyxl raise many types; the user needs the file and the reason
        raise MedtransferError(f"cannot read label table {path}: {exc}") from exc
    table = table.fillna("")
    table.columns = [str(c).strip() for c in table.columns]
    return table.map(lambda v: str(v).strip())


def read_label_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Several releases of one sheet (same columns) stacked into one table."""
    if not paths:
        raise MedtransferError("no label table given")
    return pd.concat([read_label_table(p) for p in paths], ignore_index=True).fillna("")


def require_columns(table: pd.DataFrame, columns: Sequence[str], *, source: str, option: str) -> None:
    """One line naming the missing columns, the ones present and the option that picks another."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MedtransferError(
            f"{source} lacks column(s) {', '.join(map(repr, missing))}; it has: {', '.join(map(str, table.columns))} "
            f"(pick others with {option})"
        )
