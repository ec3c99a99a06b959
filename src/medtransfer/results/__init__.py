"""The results table shared by probe and adapt: one row per (backbone, method, regime, shots, seed, fold, ...).

``write_results`` adds one part per write (``store``); ``read_rows`` / ``read_predictions`` read the union;
``compact_results`` folds the parts and writes results.parquet, results.csv and predictions.parquet.
"""

from medtransfer.results.compact import Compacted, CompactionBusy, compact_results, export_tables
from medtransfer.results.files import read_table, write_atomically
from medtransfer.results.rows import BASE_KEY, KEY, KEY_DEFAULTS, ResultRow, config_hash, with_key
from medtransfer.results.store import (
    CSV_FILE,
    PARTS,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    check_results_folder,
    has_results,
    read_predictions,
    read_results,
    read_rows,
    read_union,
    write_results,
)

__all__ = [
    "BASE_KEY", "CSV_FILE", "KEY", "KEY_DEFAULTS", "PARTS", "PREDICTIONS_FILE", "RESULTS_FILE", "Compacted",
    "CompactionBusy", "ResultRow", "check_results_folder", "compact_results", "config_hash", "export_tables",
    "has_results", "read_predictions", "read_results", "read_rows", "read_table", "read_union", "with_key",
    "write_atomically", "write_results",
]
