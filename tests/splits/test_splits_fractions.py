"""Splits options for the probe: label fractions and center-aware few-shot (additive, backward compatible)."""

import json

import pandas as pd
import pytest

from medtransfer.errors import MedtransferError
from medtransfer.splits import SplitSpec, load_splits, make_splits, save_splits


def _manifest(tmp_path, n_patients=60):
    from medtransfer.data.manifest import load_manifest

    rows = []
    for p in range(n_patients):
        for j in range(2):
            rows.append({"image": f"img{p}_{j}.png", "label": "sick" if p % 3 == 0 else "well",
                         "patient": f"p{p}", "center": f"c{p % 2}", "id": f"p{p}_{j}"})
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return load_manifest(path, check_files=False)


def test_fractions_nested_stratified_deterministic(tmp_path):
    manifest = _manifest(tmp_path)
    spec = SplitSpec(n_folds=3, fractions=(0.1, 0.5), fewshot_seeds=2)
    splits = make_splits(manifest, spec)
    again = make_splits(manifest, spec)
    assert splits.to_json() == again.to_json()
    for fold in splits.folds:
        for seed in (0, 1):
            small, large = set(fold.fractions[0.1][seed]), set(fold.fractions[0.5][seed])
            assert small <= large <= set(fold.train)
            labels = [splits.labels[i] for i in small]
            assert set(labels) == {0, 1}  # every class keeps at least one sample
        assert fold.fractions[0.5][0] != fold.fractions[0.5][1]
    save_splits(splits, tmp_path / "s.json")
    loaded = load_splits(tmp_path / "s.json")
    assert loaded.fractions == [0.1, 0.5]
    assert loaded.folds[0].fractions == splits.folds[0].fractions


def test_files_without_options_are_unchanged(tmp_path):
    manifest = _manifest(tmp_path)
    document = json.loads(make_splits(manifest, SplitSpec(n_folds=3, shots=(2,), fewshot_seeds=2)).to_json())
    assert "fractions" not in document["params"] and "fewshot_per_center" not in document["params"]
    assert all("fractions" not in fold for fold in document["folds"])


def test_center_aware_fewshot_takes_k_per_class_per_center(tmp_path):
    manifest = _manifest(tmp_path)
    splits = make_splits(manifest, SplitSpec(n_folds=3, shots=(1, 2), fewshot_seeds=2, fewshot_per_center=True))
    center = dict(zip(manifest.table["id"], manifest.table["center"], strict=True))
    for fold in splits.folds:
        subset = fold.fewshot[2][0]
        cells = pd.Series([(splits.labels[i], center[i]) for i in subset]).value_counts()
        assert (cells == 2).all() and len(cells) == 4
        assert set(fold.fewshot[1][0]) <= set(subset)
    with pytest.raises(MedtransferError, match="per center"):
        make_splits(manifest, SplitSpec(n_folds=3, shots=(500,), fewshot_per_center=True))


def test_bad_fraction_is_a_user_error(tmp_path):
    with pytest.raises(MedtransferError, match="fractions"):
        make_splits(_manifest(tmp_path), SplitSpec(n_folds=3, fractions=(1.5,)))

