"""Extract: several backbones in one call, the pixel cache, embedding variants, precision and devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extract_support import PREP, TINY, TINY2, extract_kwargs, make_images, write_manifest
from medtransfer import cache_schema, device
from medtransfer.backbones import REGISTRY, BackboneSpec, Preprocessing
from medtransfer.data.fingerprint import fingerprints
from medtransfer.errors import MedtransferError
from medtransfer.extract import dataset as dataset_module
from medtransfer.extract import expand_backbones, extract_features, extract_many, open_pixel_cache
from medtransfer.extract import pixels as pixels_module

VIT = "tiny-test-vit"


@pytest.fixture(autouse=True)
def _tiny(tiny_backbones):
    return tiny_backbones


@pytest.fixture
def data(tmp_path):
    images = make_images(tmp_path / "img", 10)
    return tmp_path, images, write_manifest(tmp_path / "m.csv", images)


def test_several_backbones_one_call(data):
    tmp, _, manifest = data
    results = extract_many(manifest, [TINY, TINY2, TINY], tmp / "s.zarr", **extract_kwargs())
    assert [r.backbone for r in results] == [TINY, TINY2]
    dims = {i.backbone: i.dim for i in cache_schema.list_groups(tmp / "s.zarr")}
    assert dims == {TINY: 16, TINY2: 24}


def test_seed_expands_to_the_benchmark_set():
    from medtransfer.backbones.registry import SEED_BACKBONES

    names = expand_backbones(["seed", "resnet50"])
    # the benchmark's configs hold 10 of the registry's backbones (RAD-DINO is not one: registry.SEED_BACKBONES)
    assert names == list(SEED_BACKBONES) and len(names) == 10 and names.count("resnet50") == 1
    with pytest.raises(MedtransferError):
        expand_backbones([])


def test_pixel_cache_decodes_once_for_all_backbones(data):
    tmp, images, manifest = data
    store = tmp / "s.zarr"
    results = extract_many(manifest, [TINY], store, pixel_cache=True, **extract_kwargs())
    cache_path = tmp / "s.pixels.zarr"
    cache = open_pixel_cache(cache_path, 32)
    pixels = cache.load_paths(images[:3])
    assert pixels.dtype == np.uint16 and pixels.shape == (3, 3, 32, 32)
    assert cache.to_float(pixels).min() >= 0.0 and cache.to_float(pixels).max() <= 1.0

    # from now on nothing may decode an image file
    def no_decode(path):
        raise AssertionError(f"decoded {path} again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset_module, "load_image", no_decode)
        patch.setattr(pixels_module, "load_image", no_decode)
        second = extract_many(manifest, [TINY2], store, pixel_cache=cache_path, **extract_kwargs(num_workers=1))
    assert second[0].n_computed == 10
    # cached at the input size in 16 bits: the same inputs as decoding the files (up to rounding), same group
    direct = extract_features(manifest, TINY, tmp / "direct.zarr", **extract_kwargs())
    assert direct.group_key == results[0].group_key
    assert extract_features(manifest, TINY, store, **extract_kwargs()).n_computed == 0
    a = cache_schema.read_features(store, results[0].group_key).features
    b = cache_schema.read_features(tmp / "direct.zarr", direct.group_key).features
    np.testing.assert_allclose(a, b, atol=2e-2)


def test_pixel_cache_is_resumable_and_incremental(data, monkeypatch):
    tmp, images, manifest = data
    path = tmp / "p.zarr"
    calls = []

    def crash(chunk):
        calls.append(chunk)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pixels_module.fill_pixel_cache(path, [str(p) for p in images], size=32, dtype="uint8", chunk_rows=4,
                                       progress=False, after_chunk=crash)
    cache, decoded = pixels_module.fill_pixel_cache(path, [str(p) for p in images], size=32, dtype="uint8",
                                                    chunk_rows=4, progress=False)
    assert decoded == 6 and len(cache.index) == 10
    more = make_images(tmp / "img", 3, seed=3, prefix="more")
    more_shas = fingerprints([str(p) for p in more])
    cache, decoded = pixels_module.fill_pixel_cache(path, [str(p) for p in images + more], size=32, dtype="uint8",
                                                    progress=False)
    assert decoded == 3  # the reopened partial chunk keeps its rows; only the new images are decoded
    assert cache.load_shas(more_shas).dtype == np.uint8
    with pytest.raises(MedtransferError, match="no 64-px group"):
        open_pixel_cache(path, 64)


@pytest.fixture
def tiny_vit(monkeypatch) -> str:
    """A 4-block ViT at 32 px, registered for one test."""
    vit_module = pytest.importorskip("medtransfer.backbones.vit")
    timm_vit = pytest.importorskip("timm.models.vision_transformer")

    def build(pretrained: bool):
        model = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2,
                                           num_classes=0)
        return vit_module.ViTEmbedder(model, lambda m, x: m.forward_features(x), token_dim=32, pooling="cls")

    monkeypatch.setitem(REGISTRY, VIT, BackboneSpec(
        name=VIT, architecture="tiny ViT", source="test", embed_dim=32, n_params_m=0.0, embedding_kind="cls-token",
        build=build, preprocessing=PREP, family="vit"))
    return VIT


def test_embedding_variants_are_stored_beside_the_default(data, tiny_vit):
    tmp, _, manifest = data
    store = tmp / "s.zarr"
    plain = extract_features(manifest, VIT, store, **extract_kwargs())
    result = extract_features(manifest, VIT, store, embeddings=["cls", "mean", "cls_mean", "last4"],
                              **extract_kwargs())
    assert result.group_key == plain.group_key and result.n_computed == 10  # variants added to the same group
    assert set(result.embeddings) == {"cls", "mean", "cls_mean", "last4"}
    assert set(cache_schema.group_embeddings(store, result.group_key)) == {"cls", "mean", "cls_mean", "last4"}
    read = {k: cache_schema.read_features(store, result.group_key, k).features
            for k in (None, "cls", "mean", "cls_mean", "last4")}
    assert read[None].shape == (10, 32) and read["cls_mean"].shape == (10, 64) and read["last4"].shape == (10, 160)
    np.testing.assert_array_equal(read[None], read["cls"])
    np.testing.assert_array_equal(read["cls_mean"], np.concatenate([read["cls"], read["mean"]], axis=1))
    np.testing.assert_array_equal(read["last4"][:, 96:128], read["cls"])  # the last block's normed class token
    assert extract_features(manifest, VIT, store, embeddings=["cls"], **extract_kwargs()).n_computed == 0
    assert cache_schema.verify_store(store) == []


def test_variants_that_do_not_apply_are_skipped_when_several_backbones_run(data, tiny_vit):
    tmp, _, manifest = data
    results = extract_many(manifest, [TINY, VIT], tmp / "s.zarr", embeddings=["mean"], **extract_kwargs())
    assert [r.embeddings for r in results] == [(), ("mean",)]


def test_token_variants_need_a_vit(data):
    tmp, _, manifest = data
    with pytest.raises(MedtransferError, match="no token sequence"):
        extract_features(manifest, TINY, tmp / "s.zarr", embeddings=["mean"], **extract_kwargs())
    with pytest.raises(MedtransferError, match="last4 is not supported"):
        extract_features(manifest, TINY, tmp / "s.zarr", embeddings=["last4"], **extract_kwargs())


def test_precision_and_device_options(data):
    tmp, _, manifest = data
    assert device.resolve_precision("auto", torch.device("cpu")) is None
    assert device.resolve_precision("auto", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(MedtransferError, match="unknown precision"):
        device.resolve_precision("fp8", torch.device("cpu"))
    bf16 = extract_features(manifest, TINY, tmp / "s.zarr", precision="bf16", **extract_kwargs())
    assert bf16.n_computed == 10
    if not torch.cuda.is_available():
        with pytest.raises(MedtransferError, match="no CUDA GPU"):
            extract_features(manifest, TINY, tmp / "t.zarr", **extract_kwargs(device="cuda"))


def test_preprocessing_override_is_part_of_the_key(data):
    tmp, _, manifest = data
    a = extract_features(manifest, TINY, tmp / "s.zarr", **extract_kwargs())
    b = extract_features(manifest, TINY, tmp / "s.zarr", preprocessing=Preprocessing(input_size=48),
                         **extract_kwargs())
    assert a.group_key != b.group_key and b.n_computed == 10


@pytest.mark.parametrize("resize", ["squash", "center-crop", "pad-square"])
def test_pixel_cache_at_another_size_goes_through_per_image_preprocessing(data, resize):
    tmp, _, manifest = data
    prep = Preprocessing(input_size=32, resize=resize)
    via_cache = extract_features(manifest, TINY, tmp / "s.zarr", pixel_cache=tmp / "p.zarr", pixel_size=64,
                                 preprocessing=prep, **extract_kwargs())
    direct = extract_features(manifest, TINY, tmp / "d.zarr", preprocessing=prep, **extract_kwargs())
    a = cache_schema.read_features(tmp / "s.zarr", via_cache.group_key).features
    b = cache_schema.read_features(tmp / "d.zarr", direct.group_key).features
    assert via_cache.n_computed == 10 and a.shape == b.shape and via_cache.group_key != direct.group_key
    info = {i.key: i for i in cache_schema.list_groups(tmp / "s.zarr")}[via_cache.group_key]
    assert info.preprocessing["pixel_source"] == "pixel-cache s64 uint16"
    # a resize of a resize (of noise images, the worst case): close, not equal
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_resize_square_at_native_size_leaves_the_decoded_image_alone():
    """An image already at the cache size used to be clamped in place on an expanded view (a crash)."""
    from medtransfer.extract.preprocess import resize_square

    image = np.linspace(-0.5, 1.5, 32 * 32, dtype=np.float32).reshape(32, 32)
    before = image.copy()
    square = resize_square(image, 32)
    assert square.shape == (3, 32, 32)
    assert float(square.min()) == 0.0 and float(square.max()) == 1.0
    np.testing.assert_array_equal(image, before)
