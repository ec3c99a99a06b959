"""Probe cached features on the splits file's folds: full data, every few-shot subset, label fractions.

Per task: the head's hyperparameters are chosen on the fold's ``val`` rows (validation MCC at threshold 0.5 /
argmax; ties to the lower validation log loss, then the simpler candidate); the full regime then refits on
train + val with the chosen ones (as DINOv2's linear evaluation does); few-shot and fraction regimes keep the
fit on their own subset. Test rows are used for nothing but the reported metrics.

Preprocessing (``--preprocess``) is fitted on the rows a model is fitted on. The decision threshold is 0.5, or
with ``threshold="val-mcc"`` the one maximizing MCC on the validation rows' probabilities from the fit on the
training rows (never test rows; for the full regime the refit's own val rows would be in-sample). Both the
rule and the threshold are recorded per row, with the MCC at 0.5 beside it.

Method names: the head name for the store's default embedding (``logreg``), ``head@kind`` for a variant
(``logreg@mean``). Problems stop at the row: a task that cannot be fitted (one class in train, a short
few-shot subset, NaN/inf features) is a row with ``status="failed"`` and the reason in ``error``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from medtransfer import cache_schema
from medtransfer.errors import MedtransferError, first_line
from medtransfer.metrics import compute_metrics, predict_labels
from medtransfer.probe import batched
from medtransfer.probe.features import apply_preprocess, l2_normalize, parse_preprocess, read_embedding
from medtransfer.probe.heads import HeadSpec, resolve_heads, scores_to_proba
from medtransfer.probe.summary import summarize
from medtransfer.probe.threshold import check_rule, choose_threshold
from medtransfer.results import ResultRow, write_results
from medtransfer.splits.schema import SplitsFile, load_splits
from medtransfer.splits.tasks import Task, tasks_for

SUMMARY_FILE = "probe_summary.csv"  # this call's summary (mean ± std, bootstrap CI), beside results.csv


def list_backbones(store) -> list[str]:
    return sorted({info.backbone for info in cache_schema.list_groups(store)})


def run_probe(
    store: str | Path,
    splits_path: str | Path,
    backbones: list[str],
    out: str | Path,
    heads: list[str] = ("logreg",),
    weights: str | None = None,
    regimes: tuple[str, ...] = ("full", "fewshot"),
    progress: bool = True,
    *,
    embeddings: list[str] | str | None = None,
    class_weight: str = "balanced",
    preprocess: str = "standardize",
    threshold: str = "0.5",
    fractions: list[float] | None = None,
    device: str = "auto",
    tune: str = "val",
    inner_folds: int = 3,
) -> pd.DataFrame:
    """Fit every (backbone, embedding, head, task) and write the results table under ``out``; returns its rows.

    ``backbones=["all"]``: every backbone in the store. ``heads=["all"]``: every registered head.
    ``embeddings``: None / "default" for the store's ``features``; kinds such as "cls", "mean", "cls_mean",
    "last4" for the ``features_<kind>`` variants. ``class_weight``: "balanced" or "none". ``threshold``: "0.5"
    or "val-mcc". ``fractions``: label fractions to run (the splits file must hold them). ``tune``: "val" (the
    fold's validation rows) or "cv" (stratified ``inner_folds``-fold CV on the task's training rows; the final
    fit then uses train + val for the full regime, train for the others; a val-mcc threshold is chosen on the
    pooled out-of-fold predictions)."""
    if tune not in ("val", "cv"):
        raise MedtransferError(f"--tune must be val or cv, got {tune!r}")
    splits = load_splits(splits_path)
    head_specs = resolve_heads(heads)
    if class_weight not in ("balanced", "none", None):
        raise MedtransferError(f"--class-weight must be balanced or none, got {class_weight!r}")
    balanced = class_weight == "balanced"
    steps = parse_preprocess(preprocess)
    rule = check_rule(threshold)
    if list(backbones) == ["all"]:
        backbones = list_backbones(store)
        if not backbones:
            raise MedtransferError(f"store {store} holds no feature groups; run `medtransfer extract` first")
    if embeddings is None or isinstance(embeddings, str):
        embeddings = [embeddings or "default"]
    keys = {backbone: cache_schema.find_group(store, backbone, weights) for backbone in backbones}
    tasks = tasks_for(splits, regimes, fractions)
    if not tasks:
        raise MedtransferError("no tasks: the splits file has no folds (or none of the asked regimes)")
    all_ids = list(splits.labels)
    position = {sample_id: i for i, sample_id in enumerate(all_ids)}
    y_all = np.array([splits.labels[i] for i in all_ids], dtype=int)
    n_classes = len(splits.classes)
    settings = {"preprocessing": "+".join(steps) or "none", "class_weight": "balanced" if balanced else "none",
                "threshold_rule": rule if tune == "val" else f"{rule} (inner cv)" if rule != "0.5" else rule}
    rows: list[ResultRow] = []
    predictions: list[pd.DataFrame] = []
    for backbone, key in keys.items():
        for embedding in embeddings:
            features = read_embedding(store, key, embedding)
            x_all = features.rows_for(all_ids, what=f"the splits file (backbone {backbone})")
            bad_rows = ~np.isfinite(x_all).all(1)
            if "l2" in steps:
                x_all = l2_normalize(np.where(bad_rows[:, None], 0, x_all))
            context = _Context(backbone, "" if embedding in ("default", None) else embedding, x_all, y_all,
                               position, bad_rows, all_ids, n_classes, steps, balanced, rule, device, splits,
                               tune, inner_folds)
            bar = tqdm(total=len(tasks) * len(head_specs), desc=f"probe {backbone}", unit="fit",
                       disable=not progress)
            with bar:
                for head in head_specs:
                    for row, prediction in _run_head(context, head, tasks, bar):
                        row.weights = features.attrs.get("weights", "")
                        row.splits = splits.fingerprint
                        for name, value in settings.items():
                            setattr(row, name, value)
                        rows.append(row)
                        if prediction is not None:
                            predictions.append(prediction)
    predicted = pd.concat(predictions, ignore_index=True) if predictions else None
    write_results(out, rows, predicted)
    table = pd.DataFrame([r.as_record() for r in rows])
    summarize(table, predicted).to_csv(Path(out) / SUMMARY_FILE, index=False)
    return table


@dataclass
class _Context:
    backbone: str
    embedding: str
    x_all: np.ndarray
    y_all: np.ndarray
    position: dict
    bad_rows: np.ndarray
    all_ids: list
    n_classes: int
    steps: tuple
    balanced: bool
    rule: str
    device: str
    splits: SplitsFile
    tune: str = "val"
    inner_folds: int = 3

    def index(self, ids: list[str]) -> np.ndarray:
        return np.fromiter((self.position[i] for i in ids), dtype=np.int64, count=len(ids))


def _new_row(ctx: _Context, head: HeadSpec, task: Task) -> ResultRow:
    method = head.name if not ctx.embedding else f"{head.name}@{ctx.embedding}"
    return ResultRow(backbone=ctx.backbone, method=method, regime=task.regime, shots=task.shots, seed=task.seed,
                     fold=task.fold, n_test=len(task.test), fraction=task.fraction, embedding=ctx.embedding)


def _check_task(ctx: _Context, task: Task) -> str:
    """Why the task cannot be fitted ('' if it can)."""
    y_train = ctx.y_all[ctx.index(task.train)]
    bad = [i for part in (task.train, task.val, task.test) for i in part if ctx.bad_rows[ctx.position[i]]]
    if bad:
        return f"{len(bad)} sample(s) of this task have NaN/inf features in backbone {ctx.backbone} (e.g. {bad[:3]})"
    if len(task.test) == 0:
        return "the fold has no test rows"
    if len(np.unique(y_train)) < 2:
        return f"training rows hold a single class ({ctx.splits.classes[int(y_train[0])]!r})" if len(y_train) \
            else "no training rows"
    if task.regime == "fewshot" and not ctx.splits.params.get("fewshot_per_center"):
        counts = np.bincount(y_train, minlength=ctx.n_classes)
        short = [(ctx.splits.classes[c], int(counts[c])) for c in range(ctx.n_classes) if counts[c] < task.shots]
        if short:
            return (f"few-shot subset holds {short[0][1]} sample(s) of class {short[0][0]!r}, fewer than the "
                    f"{task.shots} shots asked for (more shots than the class allows)")
    return ""


def _run_head(ctx: _Context, head: HeadSpec, tasks: list[Task], bar):
    problems = {i: _check_task(ctx, t) for i, t in enumerate(tasks)}
    good = [i for i, reason in problems.items() if not reason]
    results: dict[int, tuple] = {}
    if head.batched and good:
        fit_all = _logreg_batched_cv if ctx.tune == "cv" else _logreg_batched
        results = fit_all(ctx, head, [tasks[i] for i in good])
        results = {good[j]: r for j, r in results.items()}
        for i, r in results.items():
            if isinstance(r, str):
                problems[i] = r
    for i, task in enumerate(tasks):
        row = _new_row(ctx, head, task)
        if problems[i]:
            row.status, row.error = "failed", problems[i]
            bar.update()
            yield row, None
            continue
        if head.batched:
            params, tune_labels, val_proba, test_proba, seconds, n_train = results[i]
        else:
            try:
                params, tune_labels, val_proba, test_proba, seconds, n_train = _fit_sklearn(ctx, head, task)
            except Exception as exc:  # a head that cannot fit this task: a failed row, never a crash
                row.status, row.error = "failed", f"{type(exc).__name__}: {first_line(exc, 300, default='no message')}"
                bar.update()
                yield row, None
                continue
        bar.update()
        yield _finish(ctx, head, task, row, params, tune_labels, val_proba, test_proba, seconds, n_train)


def _finish(ctx, head, task, row, params, tune_labels, tune_proba, test_proba, seconds, n_train):
    """``tune_labels`` / ``tune_proba``: the fold's val rows (or inner-CV out-of-fold rows), never test rows."""
    y_test = ctx.y_all[ctx.index(task.test)]
    cut = choose_threshold(ctx.rule, tune_labels, tune_proba)
    row.fit_seconds, row.n_train = seconds, n_train
    row.hyperparameters = json.dumps(params, sort_keys=True)
    row.threshold = cut
    for name, value in compute_metrics(y_test, test_proba, 0.5 if np.isnan(cut) else cut).items():
        setattr(row, name, value)
    row.mcc_at_05 = compute_metrics(y_test, test_proba, 0.5)["mcc"] if ctx.rule != "0.5" else row.mcc
    prediction = pd.DataFrame({
        "backbone": ctx.backbone, "method": row.method, "regime": task.regime, "shots": task.shots,
        "seed": task.seed, "fold": task.fold, "fraction": task.fraction, "id": task.test, "label": y_test,
        "probability": test_proba[:, 1] if ctx.n_classes == 2 else test_proba.max(axis=1),
        "predicted": predict_labels(test_proba, 0.5 if np.isnan(cut) else cut),
    })
    if ctx.n_classes > 2:
        for class_index in range(ctx.n_classes):
            prediction[f"probability_{class_index}"] = test_proba[:, class_index]
    return row, prediction


def _logreg_batched(ctx: _Context, head: HeadSpec, tasks: list[Task]) -> dict[int, tuple]:
    """Every (task, C) at once; then one stacked refit on train + val for the full-regime tasks."""
    start = time.perf_counter()
    grid = head.grid
    cs = np.array([p["C"] for p in grid], dtype=float)
    train_rows = [ctx.index(t.train) for t in tasks]
    fit = batched.fit_linear_grid(ctx.x_all, ctx.y_all, train_rows, cs, ctx.n_classes, ctx.steps, ctx.balanced,
                                  ctx.device)
    chosen = np.zeros(len(tasks), dtype=int)
    val_proba: dict[int, np.ndarray] = {}
    by_fold: dict[tuple, list[int]] = {}
    for j, task in enumerate(tasks):
        by_fold.setdefault((task.fold, tuple(task.val)), []).append(j)
    for (_, val_ids), members in by_fold.items():
        if not val_ids:
            for j in members:
                val_proba[j] = None
            continue
        y_val = ctx.y_all[ctx.index(list(val_ids))]
        proba = batched.probabilities_many(fit, members, ctx.x_all[ctx.index(list(val_ids))], ctx.n_classes)
        for m, j in enumerate(members):
            chosen[j] = batched.choose_on_val(y_val, proba[m])
            val_proba[j] = proba[m, chosen[j]]
    refit = [j for j, t in enumerate(tasks) if t.refit_with_val and len(t.val)]
    if refit:
        rows = [np.concatenate([train_rows[j], ctx.index(tasks[j].val)]) for j in refit]
        refit_fit = batched.fit_linear_grid(ctx.x_all, ctx.y_all, rows, cs[chosen[refit]][:, None], ctx.n_classes,
                                            ctx.steps, ctx.balanced, ctx.device)
    results: dict[int, tuple] = {}
    by_test: dict[tuple, list[int]] = {}
    for j, task in enumerate(tasks):
        by_test.setdefault(tuple(task.test), []).append(j)
    refit_pos = {j: k for k, j in enumerate(refit)}
    test_proba: dict[int, np.ndarray] = {}
    for test_ids, members in by_test.items():
        x_test = ctx.x_all[ctx.index(list(test_ids))]
        plain = [j for j in members if j not in refit_pos]
        if plain:
            proba = batched.probabilities_many(fit, plain, x_test, ctx.n_classes, grid_index=chosen[plain])
            test_proba.update(zip(plain, proba, strict=True))
        again = [j for j in members if j in refit_pos]
        if again:
            proba = batched.probabilities_many(refit_fit, [refit_pos[j] for j in again], x_test, ctx.n_classes,
                                               grid_index=np.zeros(len(again), dtype=int))
            test_proba.update(zip(again, proba, strict=True))
    seconds = (time.perf_counter() - start) / len(tasks)  # the stacked solve's time, shared out per task
    for j, task in enumerate(tasks):
        n_train = len(task.train) + (len(task.val) if j in refit_pos else 0)
        params = dict(grid[chosen[j]])
        conv = fit.converged[j, chosen[j]] and (j not in refit_pos or refit_fit.converged[refit_pos[j], 0])
        if not conv:
            params["converged"] = False
        y_val = ctx.y_all[ctx.index(task.val)] if len(task.val) else None
        results[j] = (params, y_val, val_proba[j], test_proba[j], seconds, n_train)
    return results


def _logreg_batched_cv(ctx: _Context, head: HeadSpec, tasks: list[Task]) -> dict[int, tuple | str]:
    """C chosen by stratified inner CV on each task's training rows: every (task, inner fold, C) is one stacked
    solve; then one stacked final fit (train + val for the full regime) with the chosen C."""
    start = time.perf_counter()
    cs = np.array([p["C"] for p in head.grid], dtype=float)
    sub_rows, sub_eval, owner, results = [], [], [], {}
    for j, task in enumerate(tasks):
        rows = ctx.index(task.train)
        split = _inner_splits(ctx, rows)
        if isinstance(split, str):
            results[j] = split
            continue
        for fit_part, eval_part in split:
            sub_rows.append(rows[fit_part])
            sub_eval.append(rows[eval_part])
            owner.append(j)
    live = sorted({j for j in owner})
    if not live:
        return results
    fit = batched.fit_linear_grid(ctx.x_all, ctx.y_all, sub_rows, cs, ctx.n_classes, ctx.steps, ctx.balanced,
                                  ctx.device)
    pooled: dict[int, list] = {j: [] for j in live}
    for s_index, j in enumerate(owner):
        proba = batched.probabilities_many(fit, [s_index], ctx.x_all[sub_eval[s_index]], ctx.n_classes)[0]
        pooled[j].append((ctx.y_all[sub_eval[s_index]], proba))
    chosen, oof = {}, {}
    for j in live:
        labels = np.concatenate([lab for lab, _ in pooled[j]])
        proba = np.concatenate([p for _, p in pooled[j]], axis=1)  # [P, n, K]
        chosen[j] = batched.choose_on_val(labels, proba)
        oof[j] = (labels, proba[chosen[j]])
    final_rows = [np.concatenate([ctx.index(tasks[j].train), ctx.index(tasks[j].val)]) if tasks[j].refit_with_val
                  else ctx.index(tasks[j].train) for j in live]
    final = batched.fit_linear_grid(ctx.x_all, ctx.y_all, final_rows, cs[[chosen[j] for j in live]][:, None],
                                    ctx.n_classes, ctx.steps, ctx.balanced, ctx.device)
    seconds = (time.perf_counter() - start) / len(live)
    for k, j in enumerate(live):
        test_proba = batched.probabilities_many(final, [k], ctx.x_all[ctx.index(tasks[j].test)], ctx.n_classes,
                                                grid_index=[0])[0]
        params = {**head.grid[chosen[j]], "tuned_by": "inner_cv"}
        results[j] = (params, oof[j][0], oof[j][1], test_proba, seconds, len(final_rows[k]))
    return results


def _inner_splits(ctx: _Context, rows: np.ndarray):
    """Stratified inner folds of a task's training rows, grouped by patient when the splits file says who is who
    (as the outer folds are); or why there can be none."""
    y = ctx.y_all[rows]
    groups = np.array([ctx.splits.groups.get(ctx.all_ids[r], ctx.all_ids[r]) for r in rows])
    smallest = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    k = min(ctx.inner_folds, smallest)
    if k < 2:
        return (f"inner-CV tuning needs at least 2 training patients of every class (the smallest has {smallest}); "
                "use --tune val")
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=0).split(rows, y, groups))


def _fit_sklearn(ctx: _Context, head: HeadSpec, task: Task):
    start = time.perf_counter()
    tr, va, te = ctx.index(task.train), ctx.index(task.val), ctx.index(task.test)
    x_train, (x_val, x_test) = apply_preprocess(ctx.x_all[tr], [ctx.x_all[va], ctx.x_all[te]], ctx.steps)
    y_train, y_val = ctx.y_all[tr], ctx.y_all[va]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        if ctx.tune == "cv":
            return _fit_sklearn_cv(ctx, head, task, start)
        candidates = head.grid if len(y_val) else head.grid[:1]
        models = [_fit(ctx, head, params, x_train, y_train) for params in candidates]
        val_probas = [_full_proba(m, x_val, ctx.n_classes) for m in models] if len(y_val) else [None]
        pick = batched.choose_on_val(y_val, np.stack(val_probas)) if len(y_val) else 0
        best, best_val, model = dict(candidates[pick]), val_probas[pick], models[pick]
        n_train = len(tr)
        if task.refit_with_val and len(va):
            x_fit = ctx.x_all[np.concatenate([tr, va])]
            x_fit, (x_test,) = apply_preprocess(x_fit, [ctx.x_all[te]], ctx.steps)
            model = _fit(ctx, head, best, x_fit, np.concatenate([y_train, y_val]))
            n_train += len(va)
        test_proba = _full_proba(model, x_test, ctx.n_classes)
    return best, (y_val if len(y_val) else None), best_val, test_proba, time.perf_counter() - start, n_train


def _fit_sklearn_cv(ctx: _Context, head: HeadSpec, task: Task, start: float):
    tr = ctx.index(task.train)
    split = _inner_splits(ctx, tr)
    if isinstance(split, str):
        raise MedtransferError(split)
    labels = np.concatenate([ctx.y_all[tr[e]] for _, e in split])
    oof = []
    for params in head.grid:
        parts = []
        for fit_part, eval_part in split:
            x_fit, (x_eval,) = apply_preprocess(ctx.x_all[tr[fit_part]], [ctx.x_all[tr[eval_part]]], ctx.steps)
            parts.append(_full_proba(_fit(ctx, head, params, x_fit, ctx.y_all[tr[fit_part]]), x_eval,
                                     ctx.n_classes))
        oof.append(np.concatenate(parts))
    pick = batched.choose_on_val(labels, np.stack(oof))
    rows = np.concatenate([tr, ctx.index(task.val)]) if task.refit_with_val else tr
    x_fit, (x_test,) = apply_preprocess(ctx.x_all[rows], [ctx.x_all[ctx.index(task.test)]], ctx.steps)
    model = _fit(ctx, head, head.grid[pick], x_fit, ctx.y_all[rows])
    params = {**head.grid[pick], "tuned_by": "inner_cv"}
    return (params, labels, oof[pick], _full_proba(model, x_test, ctx.n_classes), time.perf_counter() - start,
            len(rows))


class _Encoded:
    """A fitted model on labels re-coded 0..k-1 (XGBoost and friends want contiguous labels)."""

    def __init__(self, model, classes):
        self.model, self.classes_ = model, classes

    def predict_proba(self, x):
        return scores_to_proba(self.model, x)


def _fit(ctx: _Context, head: HeadSpec, params: dict, x: np.ndarray, y: np.ndarray):
    classes = np.unique(y)
    codes = np.searchsorted(classes, y)
    model = head.make(**params)
    if head.sample_weight and ctx.balanced:
        model.fit(x, codes, sample_weight=batched.class_weights(y, True))
    else:
        model.fit(x, codes)
    return _Encoded(model, classes)


def _full_proba(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities with a column for every class, even those absent from this fit's training rows."""
    partial = model.predict_proba(x)
    full = np.zeros((len(x), n_classes))
    full[:, np.asarray(model.classes_, dtype=int)] = partial
    return full
