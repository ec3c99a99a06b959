"""Metrics against scikit-learn, calibration and the bootstrap CI."""

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    matthews_corrcoef,
    recall_score,
    roc_auc_score,
)

from medtransfer.metrics import METRICS, bootstrap_mcc_ci, compute_metrics, expected_calibration_error


def _data(k, n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += 0.6
    return y, p / p.sum(1, keepdims=True)


def test_binary_metrics_match_sklearn():
    y, p = _data(2)
    m = compute_metrics(y, p, threshold=0.4)
    pred = (p[:, 1] >= 0.4).astype(int)
    assert set(m) == set(METRICS)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p[:, 1]))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p[:, 1]))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))


def test_multiclass_metrics_are_macro():
    y, p = _data(3)
    m = compute_metrics(y, p)
    pred = p.argmax(1)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["brier"] == pytest.approx(np.mean(((p - np.eye(3)[y]) ** 2).sum(1)))


def test_one_class_test_set_gives_nan_aucs_not_errors():
    m = compute_metrics(np.zeros(5, dtype=int), np.tile([0.7, 0.3], (5, 1)))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"]) and m["mcc"] == 0.0


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 200000)
    correct = rng.random(200000) < conf
    y = np.where(correct, 1, 0)
    p = np.stack([1 - conf, conf], 1)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(np.zeros(100, dtype=int), np.tile([0.01, 0.99], (100, 1))) > 0.9


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    runs_small, runs_large = [], []
    for runs, n in ((runs_small, 50), (runs_large, 2000)):
        for _ in range(3):
            y = rng.integers(0, 2, n)
            pred = np.where(rng.random(n) < 0.8, y, 1 - y)
            runs.append((y, pred))
    low_s, high_s = bootstrap_mcc_ci(runs_small, 2, n_boot=500)
    low_l, high_l = bootstrap_mcc_ci(runs_large, 2, n_boot=500)
    mean_l = np.mean([matthews_corrcoef(y, p) for y, p in runs_large])
    assert low_l <= mean_l <= high_l
    assert high_l - low_l < high_s - low_s
    assert bootstrap_mcc_ci(runs_large, 2, n_boot=200, seed=3) == bootstrap_mcc_ci(runs_large, 2, n_boot=200, seed=3)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("ties", [False, True])
def test_aucs_from_one_sort_equal_scikit_learns(n_classes, ties):
    """ROC-AUC and PR-AUC without scikit-learn (one sort per row) equal roc_auc_score / average_precision_score
    (macro over present classes when multi-class) to 1e-9, tied scores included."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(n_classes + 10 * ties)
    for trial in range(20):
        n = int(rng.integers(5, 200))
        labels = rng.integers(0, n_classes, n)
        labels[:n_classes] = np.arange(n_classes)  # every class present
        proba = rng.dirichlet(np.ones(n_classes), n) + 0.5 * np.eye(n_classes)[labels] * rng.random()
        proba = np.round(proba, 1) if ties else proba
        proba = proba / proba.sum(1, keepdims=True)
        got = compute_metrics(labels, proba)
        if n_classes == 2:
            want_roc = roc_auc_score(labels, proba[:, 1])
            want_pr = average_precision_score(labels, proba[:, 1])
        else:
            onehot = np.eye(n_classes)[labels]
            want_roc = np.mean([roc_auc_score(onehot[:, k], proba[:, k]) for k in range(n_classes)])
            want_pr = average_precision_score(onehot, proba, average="macro")
        assert got["roc_auc"] == pytest.approx(want_roc, abs=1e-9, rel=0), trial
        assert got["pr_auc"] == pytest.approx(want_pr, abs=1e-9, rel=0), trial


def test_metrics_module_does_not_import_scikit_learn():
    """Scoring a row needs no scikit-learn import (its import alone cost seconds of every probe call)."""
    import subprocess
    import sys

    code = "import sys, medtransfer.metrics; print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
