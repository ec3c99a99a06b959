"""A linear head fitted as probe fits its logreg head, then installed into adapt's model.

``lp`` (and LP-FT's first stage) embed the task's rows once through adapt's own forward path and preprocessing,
then hand the embeddings to probe's logreg fitter (``probe.solvers.logreg``): the batched L-BFGS solver on standardised
features, probe's C grid, C chosen on val MCC with probe's tie rule (or by inner CV: ``tune``), balanced class
weights, the full regime refitted on train + val. The fitted raw-feature weights become the head, and adapt's
own eval path predicts with it. Why not gradient epochs: a head trained from a fresh init with early stopping
stayed untrained in few-shot tasks (issue 18: best epoch 1 in 64% of 4-shot tasks, MCC 0.198 vs probe 0.324).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from medtransfer.adapt.model import Head
from medtransfer.probe.context import FeatureMatrix, HeadFit, ProbeContext, check_task
from medtransfer.probe.fitting import fit_tasks
from medtransfer.probe.heads import get_head
from medtransfer.probe.options import ProbeOptions
from medtransfer.splits.schema import SplitsFile
from medtransfer.splits.tasks import Task

HEAD_SOLVER = "probe-logreg"  # recorded in adapt rows' ``head_solver`` extra


@dataclasses.dataclass(frozen=True)
class ProbeHeadFit:
    """What probe's logreg chose for one task (``fit``), and where it tuned (``tuning``: "val" or "cv")."""

    fit: HeadFit
    tuning: str


def fit_probe_head(embeddings: np.ndarray, ids: list[str], task: Task, splits: SplitsFile, *,
                   class_weight: str = "balanced", tune: str = "val", device: str = "cpu") -> ProbeHeadFit | str:
    """Probe's logreg on ``embeddings`` (one row per id of ``ids``, which holds the task's train, val and test
    ids), exactly as ``probe --head logreg --tune TUNE`` fits ``task``; or why the task cannot be fitted.
    ``task.refit_with_val`` decides the train + val refit, as it does in probe."""
    options = ProbeOptions.create(heads=("logreg",), class_weight=class_weight, tune=tune, device=device)
    tuning = options.tuning_for(task)
    options = dataclasses.replace(options, tune=tuning)
    labels = np.array([splits.labels[i] for i in ids], dtype=int)
    data = FeatureMatrix.create(np.asarray(embeddings), labels, ids)
    ctx = ProbeContext(backbone="", embedding="", data=data, splits=splits, options=options)
    reason = check_task(ctx, task)
    if reason:
        return reason
    outcome = next(iter(fit_tasks(get_head("logreg"), ctx, [task])))
    return outcome if isinstance(outcome, str) else ProbeHeadFit(outcome, tuning)


@torch.no_grad()
def install_linear(head: Head, weights: np.ndarray, offsets: np.ndarray, *,
                   standardize_on: torch.Tensor | None = None) -> None:
    """Make ``head`` compute probe's model: raw-feature scores ``x @ weights + offsets`` ([D, Q], [Q]; Q = 1 for
    two classes, the positive class's score, as logits [0, s] whose softmax is probe's sigmoid).

    Without ``standardize_on`` the head's standardisation is the identity (probe's weights fold it in: ``lp``
    predicts exactly as probe). With it, the head standardises with those embeddings' mean / std and the same
    function is written in that basis (LP-FT: the head then trains on well-scaled inputs)."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64)).T  # [Q, D]
    b = torch.as_tensor(np.asarray(offsets, dtype=np.float64))
    if w.shape[0] == 1:
        w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b])
    if tuple(w.shape) != tuple(head.linear.weight.shape):
        raise ValueError(f"probe's weights have shape {tuple(w.shape)}, the head {tuple(head.linear.weight.shape)}")
    if standardize_on is None:
        head.mean.zero_()
        head.scale.fill_(1.0)
    else:  # x @ w + b == ((x - mean) * scale) @ (w / scale) + (b + mean @ w)
        head.standardize_from(standardize_on)
        mean, scale = head.mean.double().cpu(), head.scale.double().cpu()
        b = b + w @ mean
        w = w / scale
    head.linear.weight.copy_(w.float())
    head.linear.bias.copy_(b.float())
