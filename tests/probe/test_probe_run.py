"""run_probe end to end on tiny synthetic stores: heads, regimes, embeddings, thresholds, failures."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from probe_support import setup
from threadpoolctl import threadpool_limits

from medtransfer.errors import MedtransferError
from medtransfer.probe import HEADS, run_probe
from medtransfer.probe import run as run_module
from medtransfer.probe.summary import summarize
from medtransfer.probe.threshold import best_mcc_threshold, choose_threshold
from medtransfer.render import probe_summary_table
from medtransfer.results import read_results
from medtransfer.testing.features import make_features, write_feature_store, write_label_splits


def test_every_head_fits_and_beats_chance(tmp_path, monkeypatch):
    store, splits, _, _ = setup(tmp_path, n_folds=3, shots=(), seeds=1)
    for name, spec in list(HEADS.items()):  # two candidates per grid keeps the test fast; tuning still runs
        assert len(spec.grid) >= 2, name  # every head has a real grid
        monkeypatch.setitem(HEADS, name, dataclasses.replace(spec, grid=spec.grid[:2]))
    with threadpool_limits(1):  # OpenMP heads (hgb, xgb) crawl when the test machine is oversubscribed
        table = run_probe(store, splits, ["tiny"], tmp_path / "out", heads=["all"], regimes=("full",),
                          progress=False)
    assert set(table["method"]) == set(HEADS)
    assert (table["status"] == "ok").all(), table[table["status"] != "ok"][["method", "error"]]
    by_head = table.groupby("method")["mcc"].mean()
    assert (by_head > 0.6).all(), by_head
    for params in table["hyperparameters"]:
        assert json.loads(params)


def test_logreg_full_fewshot_rows_metrics_and_files(tmp_path):
    store, splits, _, _ = setup(tmp_path)
    table = run_probe(store, splits, ["all"], tmp_path / "out", progress=False)
    assert len(table) == 3 * (1 + 2 * 2)  # folds x (full + shots x seeds)
    assert (table["status"] == "ok").all()
    for column in ("mcc", "pr_auc", "roc_auc", "balanced_accuracy", "f1", "sensitivity", "specificity",
                   "brier", "ece"):
        assert table[column].notna().all(), column
    full = table[table["regime"] == "full"]
    assert (full["mcc"] > 0.8).all()
    assert (full["n_train"] > table[table["regime"] == "fewshot"]["n_train"].max()).all()  # refit on train + val
    assert set(table["threshold"]) == {0.5} and set(table["threshold_rule"]) == {"0.5"}
    assert set(table["preprocessing"]) == {"standardize"} and set(table["class_weight"]) == {"balanced"}
    stored = read_results(tmp_path / "out")
    assert len(stored) == len(table)
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert len(predictions) == table["n_test"].sum()
    summary = pd.read_csv(tmp_path / "out" / run_module.SUMMARY_FILE)
    assert {"mcc_mean", "mcc_std", "mcc_ci_low", "mcc_ci_high"} <= set(summary.columns)
    assert (summary["mcc_ci_low"] <= summary["mcc_mean"] + 1e-9).all()
    assert (summary["mcc_mean"] <= summary["mcc_ci_high"] + 1e-9).all()


def test_val_mcc_threshold_sees_only_validation_rows(tmp_path, monkeypatch):
    store, splits_path, _, y = setup(tmp_path, shots=(4,), seeds=1)
    from medtransfer.splits import load_splits

    splits = load_splits(splits_path)
    val_sets = {f.fold: sorted(splits.labels[i] for i in f.val) for f in splits.folds}
    seen = []

    def spy(rule, labels, proba):
        seen.append(None if labels is None else sorted(labels.tolist()))
        return choose_threshold(rule, labels, proba)

    monkeypatch.setattr(run_module, "choose_threshold", spy)
    table = run_probe(store, splits_path, ["tiny"], tmp_path / "out", threshold="val-mcc", progress=False)
    assert len(seen) == len(table)
    for labels, fold in zip(seen, table["fold"], strict=True):
        assert labels == val_sets[fold]
    assert set(table["threshold_rule"]) == {"val-mcc"}
    assert table["mcc_at_05"].notna().all()


def test_threshold_rules():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.9])
    assert best_mcc_threshold(labels, scores) == pytest.approx(0.35)
    proba = np.stack([1 - scores, scores], 1)
    assert choose_threshold("0.5", labels, proba) == 0.5
    assert np.isnan(choose_threshold("val-mcc", labels, np.full((6, 3), 1 / 3)))
    with pytest.raises(MedtransferError):
        choose_threshold("test-mcc", labels, proba)


def test_multiclass_macro_metrics(tmp_path):
    store, splits, _, _ = setup(tmp_path, n_classes=3, shots=(3,), seeds=1)
    table = run_probe(store, splits, ["tiny"], tmp_path / "out", heads=["logreg", "knn"], progress=False)
    assert (table["status"] == "ok").all()
    assert (table[table["regime"] == "full"]["mcc"] > 0.6).all()
    assert table["threshold"].isna().all()
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert {"probability_0", "probability_1", "probability_2"} <= set(predictions.columns)


def test_embedding_variant_becomes_method_suffix(tmp_path):
    store, splits, _, _ = setup(tmp_path, variants=True, shots=(), seeds=1)
    table = run_probe(store, splits, ["tiny"], tmp_path / "out", embeddings=["default", "mean"],
                      regimes=("full",), progress=False)
    assert set(table["method"]) == {"logreg", "logreg@mean"}
    assert set(table["embedding"]) == {"", "mean"}
    with pytest.raises(MedtransferError, match="no 'cls' embedding"):
        run_probe(store, splits, ["tiny"], tmp_path / "out2", embeddings="cls", progress=False)


def test_fraction_regime_and_options(tmp_path):
    store, splits, _, _ = setup(tmp_path, shots=(), seeds=2, fractions=(0.25, 0.5))
    table = run_probe(store, splits, ["tiny"], tmp_path / "out", regimes=(), fractions=[0.25, 0.5],
                      class_weight="none", preprocess="l2+standardize", progress=False)
    assert set(table["regime"]) == {"fraction"} and set(table["fraction"]) == {0.25, 0.5}
    assert len(table) == 3 * 2 * 2
    assert (table["status"] == "ok").all()
    assert set(table["preprocessing"]) == {"l2+standardize"} and set(table["class_weight"]) == {"none"}
    with pytest.raises(MedtransferError, match="no label fraction"):
        run_probe(store, splits, ["tiny"], tmp_path / "out", fractions=[0.1], progress=False)
    pca = run_probe(store, splits, ["tiny"], tmp_path / "out3", heads=["logreg", "centroid"], regimes=("full",),
                    preprocess="standardize+pca4", progress=False)
    assert (pca["status"] == "ok").all() and (pca["mcc"] > 0.5).all()


def test_missing_rows_are_an_error_naming_count_and_backbone(tmp_path):
    x, y = make_features()
    ids = [f"s{i:04d}" for i in range(len(y))]
    write_feature_store(tmp_path / "f.zarr", "tiny", ids[:-5], x[:-5])
    write_label_splits(tmp_path / "splits.json", y)
    with pytest.raises(MedtransferError, match=r"5 sample\(s\).*backbone tiny"):
        run_probe(tmp_path / "f.zarr", tmp_path / "splits.json", ["tiny"], tmp_path / "out", progress=False)


def test_nan_features_single_class_and_short_fewshot_are_failed_rows(tmp_path):
    x, y = make_features()
    ids = [f"s{i:04d}" for i in range(len(y))]
    splits = write_label_splits(tmp_path / "splits.json", y, shots=(2,), seeds=2)
    fold0 = splits.folds[0]
    nan_id = next(i for i in fold0.test if all(i in f.train for f in splits.folds[1:]))
    x = x.copy()
    x[ids.index(nan_id), 3] = np.nan
    write_feature_store(tmp_path / "f.zarr", "tiny", ids, x)
    one_class = [i for i in splits.folds[1].train if splits.labels[i] == 0 and i != nan_id][:4]
    splits.folds[1].fewshot[2][0] = one_class  # a subset with one class
    short = [i for i in splits.folds[2].train if splits.labels[i] == 0 and i != nan_id][:2] + \
        [i for i in splits.folds[2].train if splits.labels[i] == 1 and i != nan_id][:1]
    splits.folds[2].fewshot[2][0] = short  # fewer shots than asked for
    from medtransfer.splits import save_splits

    save_splits(splits, tmp_path / "splits.json")
    table = run_probe(tmp_path / "f.zarr", tmp_path / "splits.json", ["tiny"], tmp_path / "out",
                      heads=["logreg", "centroid"], progress=False)
    failed = table[table["status"] == "failed"].set_index(["fold", "regime", "seed", "method"])["error"]
    for method in ("logreg", "centroid"):
        for fold in (0, 1, 2):  # the NaN sample is in fold 0's test and folds 1-2's train: every full task
            assert "NaN/inf" in failed[(fold, "full", 0, method)]
        assert "NaN/inf" in failed[(0, "fewshot", 0, method)]
        assert "single class" in failed[(1, "fewshot", 0, method)]
        assert "fewer than the 2 shots" in failed[(2, "fewshot", 0, method)]
    # the rest: seed 1 of folds 1-2 fit, unless that draw happens to hold the NaN sample
    expected_ok = {(f.fold, "fewshot", 1) for f in splits.folds[1:] if nan_id not in f.fewshot[2][1]}
    ok = table[table["status"] == "ok"]
    assert expected_ok and set(zip(ok["fold"], ok["regime"], ok["seed"], strict=True)) == expected_ok
    assert len(failed) == len(table) - len(ok)
    assert table[table["status"] == "failed"]["mcc"].isna().all()


def test_unknown_inputs_are_user_errors(tmp_path):
    store, splits, _, _ = setup(tmp_path, shots=(), seeds=1)
    for kwargs, pattern in [({"heads": ["nope"]}, "unknown probe head"), ({"class_weight": "x"}, "class-weight"),
                            ({"preprocess": "whiten"}, "preprocessing step"), ({"threshold": "x"}, "threshold"),
                            ({"regimes": ("zeroshot",)}, "regime"), ({"tune": "test"}, "--tune")]:
        with pytest.raises(MedtransferError, match=pattern):
            run_probe(store, splits, ["tiny"], tmp_path / "out", progress=False, **kwargs)


def test_summary_table_renders(tmp_path):
    store, splits, _, _ = setup(tmp_path, shots=(2,), seeds=2)
    table = run_probe(store, splits, ["tiny"], tmp_path / "out", progress=False)
    summary = summarize(table, pd.read_parquet(tmp_path / "out" / "predictions.parquet"), n_boot=200)
    assert list(summary["regime"]) == ["fewshot", "full"]
    assert (summary["n_runs"] == [6, 3]).all()
    assert probe_summary_table(summary).row_count == 2


def test_inner_cv_tuning_uses_training_rows_only(tmp_path, monkeypatch):
    store, splits_path, _, _ = setup(tmp_path, shots=(1, 4), seeds=1)
    from medtransfer.splits import load_splits

    splits = load_splits(splits_path)
    train_labels = {(f.fold, n): sorted(splits.labels[i] for i in ids[0]) for f in splits.folds
                    for n, ids in f.fewshot.items()}
    seen = []

    def spy(rule, labels, proba):
        seen.append(sorted(labels.tolist()))
        return choose_threshold(rule, labels, proba)

    monkeypatch.setattr(run_module, "choose_threshold", spy)
    table = run_probe(store, splits_path, ["tiny"], tmp_path / "out", heads=["logreg", "centroid"], tune="cv",
                      threshold="val-mcc", progress=False)
    one_shot = table[table["shots"] == 1]
    assert (one_shot["status"] == "failed").all() and one_shot["error"].str.contains("inner-CV").all()
    ok = table[table["status"] == "ok"]
    assert len(ok) == len(table) - len(one_shot) and (ok[ok["regime"] == "full"]["mcc"] > 0.8).all()
    assert all(json.loads(h)["tuned_by"] == "inner_cv" for h in ok["hyperparameters"])
    four = ok[ok["shots"] == 4]
    assert (four["n_train"] == 8).all()
    for labels in seen:  # out-of-fold rows of the task's training set, never val or test
        assert len(labels) in {8} | {len(f.train) for f in splits.folds}
    assert sorted(train_labels[(0, 4)]) in seen
