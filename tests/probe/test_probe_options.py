"""ProbeOptions: every choice checked once against the shared vocabulary, with one-line user errors."""

from __future__ import annotations

import dataclasses

import pytest
from probe_support import setup

from medtransfer.errors import MedtransferError
from medtransfer.probe import HeadFit, ProbeOptions, run_probe


def test_defaults_and_recorded_settings():
    options = ProbeOptions()
    assert options.steps == ("standardize",) and options.rule == "0.5" and options.balanced
    assert options.settings() == {"preprocessing": "standardize", "class_weight": "balanced", "threshold_rule": "0.5",
                                  "tuning": "val", "unit": "image"}
    cv = ProbeOptions(threshold="val-mcc", tune="cv", class_weight=None, heads="knn", embeddings="mean")
    assert cv.settings()["threshold_rule"] == "val-mcc (inner cv)" and cv.class_weight == "none"
    assert cv.heads == ("knn",) and cv.embeddings == ("mean",)


@pytest.mark.parametrize(("choices", "message"), [
    ({"class_weight": "heavy"}, "--class-weight must be balanced or none"),
    ({"tune": "grid"}, "--tune must be val or cv or budget"),
    ({"regimes": ("full", "zeroshot")}, "unknown regime"),
    ({"preprocess": "whiten"}, "unknown preprocessing step"),
    ({"threshold": "0.3"}, "unknown --threshold"),
])
def test_bad_choices_are_user_errors(choices, message):
    with pytest.raises(MedtransferError, match=message):
        ProbeOptions(**choices)


def test_unknown_keyword_and_mixed_forms_are_refused(tmp_path):
    with pytest.raises(MedtransferError, match="unknown probe option.*'head'"):
        ProbeOptions.create(head="logreg")
    store, splits, _, _ = setup(tmp_path, n_folds=2, shots=(), seeds=1)
    with pytest.raises(MedtransferError, match="not both"):
        run_probe(store, splits, ["tiny"], tmp_path / "out", options=ProbeOptions(), tune="cv", progress=False)


def test_options_object_and_keywords_give_the_same_rows(tmp_path):
    store, splits, _, _ = setup(tmp_path, n_folds=2, shots=(), seeds=1)
    by_keywords = run_probe(store, splits, ["tiny"], tmp_path / "a", regimes=("full",), progress=False)
    by_object = run_probe(store, splits, ["tiny"], tmp_path / "b", options=ProbeOptions(regimes=("full",)),
                          progress=False)
    columns = ["method", "fold", "mcc", "pr_auc", "hyperparameters", "threshold"]
    assert by_keywords[columns].equals(by_object[columns])


def test_head_fit_is_frozen():
    fit = HeadFit(params={}, tune_labels=None, tune_proba=None, test_proba=None, seconds=0.0, n_train=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.n_train = 2
