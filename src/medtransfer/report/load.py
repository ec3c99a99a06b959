"""Read the results tables written by `probe` and `adapt` into one clean frame.

Reading is forgiving on purpose: a crashed run, a missing metric column or a failed fold must not stop the
report; each such gap is recorded as a human-readable problem so that the page can list what is missing.
Only problems the user must fix first (a path that does not exist, no results table anywhere) raise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.errors import MedtransferError, failure_reason, first_line

# A strategy is a method in one data regime: full data, k shots per class, or a fraction of the train rows.
STRATEGY = ["method", "regime", "shots", "fraction"]
WHERE = ["task", "backbone", *STRATEGY]
KEYS = [*WHERE, "seed", "fold"]
METRICS = ["mcc", "pr_auc", "roc_auc", "balanced_accuracy"]
TABLE_NAMES = ("results.parquet", "results.csv")
PARTS_FOLDER = "parts"  # a results folder of part files (``medtransfer.results.store``)

def backbone_family(backbone: str) -> str:
    """The backbone's ``BackboneSpec.family`` ("cnn" or "vit") from the backbone registry; an open spec
    (``timm:``, ``open_clip:``, ``hf:``) gets the family its resolver infers from the built module tree ("vit"
    when attention linears outnumber convolutions: ``backbones.families.open_specs.infer_targets``). "unknown" when the
    name is not registered (a hand-made table, a renamed backbone) or the open spec cannot be resolved here
    (e.g. an ``hf:`` repo offline with no cache)."""
    return _family(str(backbone))


@functools.cache
def _family(backbone: str) -> str:
    from medtransfer.backbones import get_spec  # torch and the model libraries: only when a figure asks

    try:
        return get_spec(backbone).family
    except Exception:  # noqa: BLE001 - any failure to resolve means "not known here", said in the figure
        return "unknown"


def is_cnn(backbone: str) -> bool:
    """CNN vs foundation-model split of the comparison panels: the registry's family "cnn" (ImageNet CNNs and
    MedCLIP's ResNet); every other backbone, of unknown family included, counts as a foundation model."""
    return backbone_family(backbone) == "cnn"


@dataclass
class Results:
    """All usable rows (`ok`), plus what could not be used and why (`problems`)."""

    ok: pd.DataFrame
    failed: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    # test predictions of the ok rows (with their task), for the CIs; None when no folder has predictions.parquet
    predictions: pd.DataFrame | None = None


def find_tables(results_dir: Path) -> list[Path]:
    """Result dirs holding a table: the dir itself, else its sub-dirs (a parent of several task dirs)."""
    names = (*TABLE_NAMES, PARTS_FOLDER)
    if any((results_dir / name).exists() for name in names):
        return [results_dir]
    # Up to three levels down (e.g. results/<task>/<stage>/), never a walk through a whole image data set.
    found = {p.parent for depth in (1, 2, 3) for name in names for p in results_dir.glob("*/" * depth + name)}
    return sorted(found)


def _read_folder(run_dir: Path, problems: list[str]) -> tuple[pd.DataFrame | None, pd.DataFrame | None | bool]:
    """Rows and predictions of a folder of part files, read through the results store (the newest row of a key
    wins, with its own predictions); a folder of the one-table layout is read as before (predictions: False)."""
    if not (run_dir / PARTS_FOLDER).is_dir():
        return _read_table(run_dir, problems), False
    from medtransfer.results import read_union

    try:
        return read_union(run_dir)
    except MedtransferError as exc:
        problems.append(f"{run_dir}: unreadable ({exc})")
        return None, None


def _read_table(run_dir: Path, problems: list[str]) -> pd.DataFrame | None:
    """Parquet first (exact types), CSV as fallback when parquet is absent or truncated by a crash."""
    for name in TABLE_NAMES:
        path = run_dir / name
        if not path.exists():
            continue
        try:
            return pd.read_parquet(path) if name.endswith(".parquet") else pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a problem to list, not a crash
            problems.append(f"{path}: unreadable ({failure_reason(exc, 120)})")
    return None


def _text(column: pd.Series, default: str) -> pd.Series:
    """Strings with `default` for blanks (an all-NaN column reads back as float, so fillna would not do)."""
    return column.map(lambda v: default if pd.isna(v) or v == "" else str(v))


def _normalise(df: pd.DataFrame, run_dir: Path, problems: list[str]) -> pd.DataFrame | None:
    """Fill the optional columns and give every column the type the report relies on."""
    df = df.copy()
    for col in ("backbone", "method"):
        if col not in df.columns:
            problems.append(f"{run_dir}: column '{col}' missing; table skipped")
            return None
    if "task" not in df.columns:
        df["task"] = run_dir.name
    df["task"] = _text(df["task"], run_dir.name)
    defaults = {"regime": "full", "shots": 0, "seed": 0, "fold": 0}
    if "fraction" not in df.columns:  # written only by newer probe/adapt versions; quietly 0.0 before
        df["fraction"] = 0.0
    df["fraction"] = pd.to_numeric(df["fraction"], errors="coerce").fillna(0.0).astype(float)
    for col, default in defaults.items():
        if col not in df.columns:
            problems.append(f"{run_dir}: column '{col}' missing; assumed {default!r}")
            df[col] = default
    for col in METRICS:
        if col not in df.columns:
            problems.append(f"{run_dir}: metric column '{col}' missing")
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("task", "backbone", "method", "regime"):
        df[col] = df[col].astype(str)
    for col in ("shots", "seed", "fold"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype(int)
    if "pct_trainable" not in df.columns:
        df["pct_trainable"] = np.nan
    df["pct_trainable"] = pd.to_numeric(df["pct_trainable"], errors="coerce")
    if {"trainable_params", "total_params"} <= set(df.columns):
        computed = (
            100.0
            * pd.to_numeric(df["trainable_params"], errors="coerce")
            / pd.to_numeric(df["total_params"], errors="coerce").replace(0, np.nan)
        )
        df["pct_trainable"] = df["pct_trainable"].fillna(computed)
    # Probes on frozen features train only a head: 0 % of the backbone ("head only").
    df["pct_trainable"] = df["pct_trainable"].fillna(0.0)
    if "status" not in df.columns:
        df["status"] = "ok"
    df["status"] = _text(df["status"], "ok")
    if "error" not in df.columns:
        df["error"] = ""
    df["error"] = _text(df["error"], "")
    for col in ("weights", "embedding", "preprocessing", "peft_targets"):
        df[col] = _text(df[col], "") if col in df.columns else ""
    df["degenerate"] = df["degenerate"].fillna(False).astype(bool) if "degenerate" in df.columns else False
    df["source"] = str(run_dir)
    return df


def label_variants(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that differ only in weights (or preprocessing / PEFT targets) are other experiments, not repeats:
    where a task holds several for one backbone (method), the backbone (method) name says which, e.g.
    ``resnet18 [random]``, so no statistic pools them and no row replaces another."""
    if df.empty:
        return df
    df = df.assign(backbone_raw=df["backbone"], method_raw=df["method"])  # as written: predictions' keys
    several = df.groupby(["task", "backbone"])["weights"].transform("nunique") > 1
    df.loc[several, "backbone"] = df.loc[several, "backbone"] + " [" + df.loc[several, "weights"] + "]"
    variant = df["preprocessing"] + df["peft_targets"].map(lambda t: f", targets {t}" if t else "")
    several = df.assign(variant=variant).groupby(["task", "backbone", "method"])["variant"].transform("nunique") > 1
    df.loc[several, "method"] = df.loc[several, "method"] + " [" + variant[several] + "]"
    return df


def _degenerate(ok: pd.DataFrame) -> list[str]:
    """One line per strategy whose fits predicted a single class (or constant probabilities) on test."""
    flat = ok[ok["degenerate"].astype(bool)]
    return [
        f"{_where(key)}: {len(rows)} of {int(((ok[WHERE] == pd.Series(key, index=WHERE)).all(axis=1)).sum())} "
        f"run(s) degenerate: one class predicted for every test sample ({_runs(rows)})"
        for key, rows in flat.groupby(WHERE, sort=True)
    ]


def regime_label(regime: str, shots: int, fraction: float) -> str:
    """`full`, `16-shot` or `10% data`: how much training data a strategy saw."""
    if regime == "fewshot":
        return f"{int(shots)}-shot"
    if regime == "fraction":
        return f"{fraction:.0%} data" if fraction * 100 == round(fraction * 100) else f"{fraction:.1%} data"
    return str(regime)


def _where(key: tuple) -> str:
    task, backbone, method, regime, shots, fraction = key
    return f"{task}/{backbone}/{method} {regime_label(regime, shots, fraction)}"


def _runs(rows: pd.DataFrame) -> str:
    pairs = sorted(zip(rows["seed"], rows["fold"], strict=True))
    shown = ", ".join(f"seed {s} fold {f}" for s, f in pairs[:6])
    return shown + (f" (+{len(pairs) - 6} more)" if len(pairs) > 6 else "")


def _last_line(error: str) -> str:
    """The exception message: the last non-empty line of a traceback (its first line says nothing)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no error message"


def _failures(failed: pd.DataFrame) -> list[str]:
    """One line per strategy and error, not per fold: a crashed backbone would otherwise flood the list."""
    failed = failed.assign(reason=[_last_line(e) for e in failed["error"]])
    return [
        f"{_where(key[:6])}: {len(rows)} run(s) {key[6]} ({_runs(rows)}): {key[7]}"
        for key, rows in failed.groupby([*WHERE, "status", "reason"], sort=True)
    ]


def _absent_metrics(ok: pd.DataFrame, problems: list[str]) -> list[str]:
    """Runs without MCC / PR-AUC, grouped by source (whole column) or by strategy (some runs)."""
    found: list[str] = []
    for metric in ("mcc", "pr_auc"):
        for source, rows in ok.groupby("source", sort=True):
            nan = rows[rows[metric].isna()]
            if nan.empty:
                continue
            if len(nan) == len(rows):
                if f"{source}: metric column '{metric}' missing" not in problems:
                    found.append(f"{source}: no {metric} value in any run")
                continue
            for key, sub in nan.groupby(WHERE, sort=True):
                found.append(f"{_where(key)}: no {metric} in {len(sub)} run(s) ({_runs(sub)})")
    return found


# What a study planned per task: (backbone, method, regime, shots, seed, fold, fraction) keys, as written
Expected = dict[str, set[tuple]]


def _planned_but_absent(tried: pd.DataFrame, expected: Expected) -> list[str]:
    """Keys a study planned that no row holds (ok or failed), one line per strategy: what the study left out on
    purpose (adapt runs on ``folds = [0]`` only) is not planned, so it is not missing."""
    problems: list[str] = []
    for task in sorted(expected):
        rows = tried[tried["task"] == task]
        raw = [c if f"{c}_raw" not in rows else f"{c}_raw" for c in ("backbone", "method")]
        held = {(str(b), str(m), str(r), int(s), int(sd), int(f), round(float(fr), 9))
                for b, m, r, s, sd, f, fr in rows[[*raw, "regime", "shots", "seed", "fold", "fraction"]]
                .itertuples(index=False)}
        absent = pd.DataFrame(sorted(expected[task] - held),
                              columns=["backbone", "method", "regime", "shots", "seed", "fold", "fraction"])
        for (backbone, method, regime, shots, fraction), gaps in absent.groupby(
                ["backbone", "method", "regime", "shots", "fraction"], sort=True):
            problems.append(f"{_where((task, backbone, method, regime, shots, fraction))}: missing {_runs(gaps)} "
                            "(planned by the study)")
    return problems


def _missing_folds(ok: pd.DataFrame, failed: pd.DataFrame, expected: Expected | None = None) -> list[str]:
    """Runs that died without writing a row: a strategy lacking (seed, fold) pairs that others in the same task and
    data regime have, or a strategy not run for some backbone of its task. For the tasks of ``expected`` (a
    study's plan) the plan says what is missing instead: the keys it planned that no row holds.

    Failed rows count as present here because they are already listed with their error. Regimes are compared
    only with themselves because few-shot runs usually have more seeds than full-data runs.
    """
    raw = [c for c in ("backbone_raw", "method_raw") if c in ok.columns and c in failed.columns]
    tried = pd.concat([ok[KEYS + raw], failed[KEYS + raw]], ignore_index=True)
    problems = _planned_but_absent(tried, expected) if expected else []
    tried = tried[~tried["task"].isin(list(expected or {}))]
    regime = ["task", "regime", "shots", "fraction"]
    for _, group in tried.groupby(regime, sort=True):
        expected = set(zip(group["seed"], group["fold"], strict=True))
        for key, sub in group.groupby(WHERE, sort=True):
            missing = sorted(expected - set(zip(sub["seed"], sub["fold"], strict=True)))
            if missing:
                gaps = pd.DataFrame(missing, columns=["seed", "fold"])
                problems.append(f"{_where(key)}: missing {_runs(gaps)}")
    for task, group in tried.groupby("task", sort=True):
        backbones = sorted(group["backbone"].unique())
        for strategy, sub in group.groupby(STRATEGY, sort=True):
            not_run = sorted(set(backbones) - set(sub["backbone"]))
            if not_run:
                label = _where((task, "*", *strategy))
                problems.append(f"{label}: not run for backbone(s) {', '.join(not_run)}")
    return problems


def load_results(results_dirs: list[Path] | list[str], expected: Expected | None = None) -> Results:
    """Concatenate every results table under `results_dirs`; raise only if there is nothing to read.

    ``expected``: per task, the result keys a study planned (``study.report.expected_keys``); missing runs of
    those tasks are the planned keys no row holds, not gaps against the other strategies."""
    problems: list[str] = []
    frames: list[pd.DataFrame] = []
    predictions: list[pd.DataFrame] = []
    sources: list[Path] = []
    for raw in results_dirs:
        results_dir = Path(raw)
        if not results_dir.is_dir():
            raise MedtransferError(f"results dir not found: {results_dir}")
        run_dirs = find_tables(results_dir)
        if not run_dirs:
            raise MedtransferError(
                f"no results table in {results_dir} (expected results.parquet or .csv from probe/adapt)"
            )
        for run_dir in run_dirs:
            sources.append(run_dir)
            table, parts_predictions = _read_folder(run_dir, problems)
            if table is None:
                continue
            if table.empty:
                problems.append(f"{run_dir}: results table is empty")
                continue
            norm = _normalise(table, run_dir, problems)
            if norm is not None:
                frames.append(norm)
                found = _read_predictions(run_dir, problems, parts_predictions)
                if found is not None:
                    predictions.append(found)
    columns = [*KEYS, *METRICS, "pct_trainable", "status", "error", "weights", "degenerate", "source"]
    data = label_variants(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame(columns=columns)
    failed_mask = data["status"].str.lower() != "ok"
    failed = data[failed_mask]
    problems.extend(_failures(failed))
    ok = data[~failed_mask]
    problems.extend(_absent_metrics(ok, problems))
    problems.extend(_missing_folds(ok, failed, expected))
    ok = ok[ok["mcc"].notna()].drop_duplicates(subset=KEYS, keep="last").reset_index(drop=True)
    problems.extend(_degenerate(ok))
    return Results(ok=ok, failed=failed.reset_index(drop=True), problems=problems, sources=sources,
                   predictions=_predictions_of(ok, predictions))


PREDICTION_KEY = ["source", "backbone", "method", "regime", "shots", "seed", "fold", "fraction"]


def _read_predictions(run_dir: Path, problems: list[str],
                      from_parts: pd.DataFrame | None | bool = False) -> pd.DataFrame | None:
    """The test predictions of a results folder (what the CIs resample), typed like the results' keys:
    ``from_parts`` when read with the rows from part files, else ``predictions.parquet`` beside the table."""
    path = run_dir / "predictions.parquet"
    if from_parts is not False:
        table = from_parts
        if table is None:
            problems.append(f"{run_dir}: no test predictions, so its rows have no 95% CI")
            return None
    elif not path.exists():
        problems.append(f"{run_dir}: no predictions.parquet, so its rows have no 95% CI")
        return None
    else:
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is a problem to list, not a crash
            problems.append(f"{path}: unreadable ({type(exc).__name__}: "
                            f"{first_line(exc, 120, default='no message')})")
            return None
    if "predicted" not in table and "probability" in table and "probability_0" not in table:
        table = table.assign(predicted=(table["probability"] >= 0.5).astype(int))  # binary, adapt's 0.5 rule
    table = table.assign(source=str(run_dir), fraction=table.get("fraction", 0.0))
    for col in ("backbone", "method", "regime"):
        table[col] = table[col].astype(str)
    for col in ("shots", "seed", "fold"):
        table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0).astype(int)
    table["fraction"] = pd.to_numeric(table["fraction"], errors="coerce").fillna(0.0).astype(float)
    return table


def _predictions_of(ok: pd.DataFrame, found: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The predictions of the usable rows, with each row's task."""
    if not found or ok.empty:
        return None
    table = pd.concat(found, ignore_index=True)
    # predictions carry the names as written; ok rows may carry variant labels (``label_variants``)
    variant = [c for c in ("weights", "preprocessing", "peft_targets") if c in table.columns and c in ok.columns]
    for column in variant:
        table[column] = table[column].fillna("").astype(str)
    keys = ok[["backbone_raw", "method_raw", *PREDICTION_KEY[3:], "source", *variant, "task", "backbone", "method"]]
    keys = keys.rename(columns={"backbone": "backbone_label", "method": "method_label"})
    keys = keys.rename(columns={"backbone_raw": "backbone", "method_raw": "method"}).drop_duplicates()
    merged = table.merge(keys, on=[*PREDICTION_KEY, *variant], how="inner")
    return merged.assign(backbone=merged.pop("backbone_label"), method=merged.pop("method_label"))
