"""Re-running extract on a complete store builds no model (counted with a patched loader), through the Python
API and the CLI (``--backbone seed``); stores written before the weights identity are still recognised."""

from __future__ import annotations

import os

import pytest
import torch
import zarr
from typer.testing import CliRunner

from extract_support import TINY, TINY2, TinyCNN, extract_kwargs, make_images, write_manifest
from medtransfer import cache_schema
from medtransfer.cli import app
from medtransfer.extract import extract_many
from medtransfer.extract import pipeline as pipeline_module
from medtransfer.extract.reuse import IDENTITY_ATTR


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    return tiny_backbones


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Names of the backbones extract builds, in order."""
    built: list[str] = []
    real = pipeline_module.load_backbone

    def counting(name, weights="default"):
        built.append(name)
        return real(name, weights)

    monkeypatch.setattr(pipeline_module, "load_backbone", counting)
    return built


@pytest.fixture
def data(tmp_path):
    images = make_images(tmp_path / "img", 6)
    return tmp_path, images, write_manifest(tmp_path / "m.csv", images)


def _drop_identity(store, key: str) -> None:
    """What a store written before ``weights_identity`` looks like."""
    group = zarr.open_group(str(store / key), mode="r+")
    del group.attrs[IDENTITY_ATTR]


def test_rerun_on_a_complete_store_builds_no_model(data, builds):
    tmp, images, manifest = data
    store = tmp / "s.zarr"
    first = extract_many(manifest, [TINY, TINY2], store, **extract_kwargs())
    assert builds == [TINY, TINY2] and all(r.model_built for r in first)
    again = extract_many(manifest, [TINY, TINY2], store, **extract_kwargs())
    assert builds == [TINY, TINY2]  # nothing built the second time
    assert [r.group_key for r in again] == [r.group_key for r in first]
    assert all(r.n_computed == 0 and not r.model_built for r in again)
    # a new image: that backbone is built and computes exactly it
    more = make_images(tmp / "img", 1, seed=5, prefix="new")
    bigger = write_manifest(tmp / "m2.csv", images + more)
    (third,) = extract_many(bigger, [TINY], store, **extract_kwargs())
    assert builds[-1] == TINY and third.n_computed == 1 and third.model_built
    # a variant the group lacks, another --resize: built again
    extract_many(manifest, [TINY], store, **extract_kwargs(resize="pad"))
    assert builds[-1] == TINY and len(builds) == 4


def test_a_store_written_before_the_identity_is_recognised(data, builds):
    tmp, _, manifest = data
    store = tmp / "s.zarr"
    (first,) = extract_many(manifest, [TINY], store, **extract_kwargs())
    _drop_identity(store, first.group_key)
    (again,) = extract_many(manifest, [TINY], store, **extract_kwargs())
    assert builds == [TINY] and again.group_key == first.group_key and not again.model_built
    with cache_schema.open_store(store) as opened:
        assert IDENTITY_ATTR in opened[first.group_key].attrs  # stamped for next time


def test_a_checkpoint_file_is_identified_by_its_fingerprint(data, builds):
    tmp, _, manifest = data
    store, checkpoint = tmp / "s.zarr", tmp / "tiny.pth"
    torch.manual_seed(1)
    torch.save(TinyCNN().state_dict(), checkpoint)
    (first,) = extract_many(manifest, [TINY], store, **extract_kwargs(weights=str(checkpoint)))
    _drop_identity(store, first.group_key)  # an old store: no file fingerprint recorded
    extract_many(manifest, [TINY], store, **extract_kwargs(weights=str(checkpoint)))
    assert builds == [TINY, TINY]  # built once more, to recognise the group by content, and stamped
    (third,) = extract_many(manifest, [TINY], store, **extract_kwargs(weights=str(checkpoint)))
    assert builds == [TINY, TINY] and not third.model_built and third.group_key == first.group_key
    torch.manual_seed(2)  # other weights in the same file: built, hashed, and a new group
    torch.save(TinyCNN().state_dict(), checkpoint)
    os.utime(checkpoint, ns=(1, 1))
    (fourth,) = extract_many(manifest, [TINY], store, **extract_kwargs(weights=str(checkpoint)))
    assert builds == [TINY] * 3 and fourth.group_key != first.group_key and fourth.n_computed == 6


def test_cli_rerun_of_seed_builds_nothing(data, builds, monkeypatch):
    tmp, _, manifest = data
    monkeypatch.setattr(pipeline_module, "SEED_BACKBONES", (TINY, TINY2))
    args = ["extract", str(manifest), "--backbone", "seed", "--store", str(tmp / "s.zarr"), "--weights", "random",
            "--device", "cpu", "--workers", "0"]
    runner = CliRunner()
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert builds == [TINY, TINY2]
    second = runner.invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert builds == [TINY, TINY2]
    assert second.output.count("no model built") == 2
