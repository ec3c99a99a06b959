"""What a head's fitting strategy is given (``ProbeContext``: one backbone's features, the labels, the options)
and what it hands back per task (``HeadFit``), so that every head plugs into ``run_probe`` the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medtransfer.probe.options import ProbeOptions
from medtransfer.splits.schema import SplitsFile
from medtransfer.splits.tasks import Task


@dataclass(frozen=True)
class HeadFit:
    """One task fitted by one head. ``tune_labels`` / ``tune_proba``: the rows the hyperparameters (and a
    val-mcc threshold) were chosen on -- the fold's val rows or inner-CV out-of-fold rows, never test rows;
    None when the task has none. ``test_proba``: [n_test, n_classes]."""

    params: dict  # what tuning chose (JSON-able), e.g. {"C": 0.1}
    tune_labels: np.ndarray | None
    tune_proba: np.ndarray | None
    test_proba: np.ndarray
    seconds: float
    n_train: int
    # the linear heads (logreg, svm): raw-feature weights [D, Q] and offsets [Q] of the model that gave
    # ``test_proba`` (scores = x @ w + b; Q = 1 for two classes), so adapt's lp can install exactly this model
    linear: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class FeatureMatrix:
    """Every sample of the splits file: features (l2-normalized when asked for), labels, and which rows hold
    NaN/inf features."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    bad_rows: np.ndarray
    position: dict[str, int]  # id -> row

    @classmethod
    def create(cls, x: np.ndarray, y: np.ndarray, ids: list[str]) -> FeatureMatrix:
        return cls(x, y, list(ids), ~np.isfinite(x).all(1), {sample_id: i for i, sample_id in enumerate(ids)})

    def index(self, ids: list[str]) -> np.ndarray:
        return np.fromiter((self.position[i] for i in ids), dtype=np.int64, count=len(ids))


@dataclass(frozen=True)
class ProbeContext:
    """One (backbone, embedding) as every head sees it."""

    backbone: str
    embedding: str  # "" for the store's default features
    data: FeatureMatrix | None  # None until a head needs the features (a rerun may skip every head)
    splits: SplitsFile
    options: ProbeOptions
    weights: str = ""  # the feature group's weights attribute, recorded on every row
    task: str = ""  # the prediction task's name (--task), recorded on every row

    @property
    def n_classes(self) -> int:
        return len(self.splits.classes)

    @property
    def x_all(self) -> np.ndarray:
        return self.data.x

    @property
    def y_all(self) -> np.ndarray:
        return self.data.y

    def index(self, ids: list[str]) -> np.ndarray:
        return self.data.index(ids)


def check_task(ctx: ProbeContext, task: Task) -> str:
    """Why the task cannot be fitted by any head ('' if it can)."""
    y_train = ctx.y_all[ctx.index(task.train)]
    every = [*task.train, *task.val, *task.test]
    bad = [every[k] for k in np.flatnonzero(ctx.data.bad_rows[ctx.index(every)])]
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


def inner_splits(ctx: ProbeContext, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]] | str:
    """Stratified inner folds of a task's training rows, grouped by patient when the splits file says who is who
    (as the outer folds are); or why there can be none."""
    y = ctx.y_all[rows]
    groups = np.array([ctx.splits.groups.get(ctx.data.ids[r], ctx.data.ids[r]) for r in rows])
    smallest = min(len(np.unique(groups[y == c])) for c in np.unique(y))
    k = min(ctx.options.inner_folds, smallest)
    if k < 2:
        return (f"inner-CV tuning needs at least 2 training patients of every class (the smallest has {smallest}); "
                "use --tune val")
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=0).split(rows, y, groups))


@dataclass(frozen=True)
class InnerFolds:
    """Every inner-CV (fit rows, evaluation rows) pair of a list of tasks, flattened, with the task each belongs
    to; ``failed`` holds why a task has none (too few patients of a class)."""

    fit_rows: list[np.ndarray]
    eval_rows: list[np.ndarray]
    owner: list[int]
    failed: dict[int, str]


def inner_folds_of(ctx: ProbeContext, tasks: list) -> InnerFolds:
    """The inner folds of every task's training rows (``inner_splits``), for heads that fit them all at once."""
    fit_rows, eval_rows, owner, failed = [], [], [], {}
    for j, task in enumerate(tasks):
        rows = ctx.index(task.train)
        split = inner_splits(ctx, rows)
        if isinstance(split, str):
            failed[j] = split
            continue
        for fit_part, eval_part in split:
            fit_rows.append(rows[fit_part])
            eval_rows.append(rows[eval_part])
            owner.append(j)
    return InnerFolds(fit_rows, eval_rows, owner, failed)
