"""The job functions engines run: every call into the stages (splits, extract, probe, adapt) is here.

A job is idempotent and writes only its own rows, in one atomic ``write_results`` call (probe: one call for
all its fits; adapt: one row), so a killed job leaves no partial rows and a rerun replaces nothing finished.
Jobs take plain keyword values (picklable, JSON-able) so that Ray and submitit ship them to other processes.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path

from medtransfer.errors import MedtransferError
from medtransfer.study.spec import import_plugins


def run_job(params: dict) -> dict:
    """Run one job (``params`` from ``plan.Job.params``); returns what it did. Raises on failure."""
    import_plugins(params.get("plugins", []))
    start = time.perf_counter()
    kind = params["kind"]
    runner = {"splits": _splits, "extract": _extract, "probe": _probe, "adapt": _adapt}[kind]
    detail = runner(params)
    return {"kind": kind, "seconds": time.perf_counter() - start, **detail}


def _splits(params: dict) -> dict:
    from medtransfer.data.manifest import load_manifest
    from medtransfer.splits import SplitSpec, make_splits, save_splits

    spec = dict(params["split_spec"])
    spec["shots"] = tuple(spec["shots"])
    spec["fractions"] = tuple(spec.get("fractions", ()))
    manifest = load_manifest(params["manifest"], label_column=params["label_column"], check_files=False,
                             frames=params["frames"])
    made = make_splits(manifest, SplitSpec(**spec))
    if params["fingerprint"] and made.fingerprint != params["fingerprint"]:
        raise MedtransferError(f"splits of {params['manifest']} changed since the study was planned "
                               f"({made.fingerprint} != {params['fingerprint']}): did the manifest change?")
    path = Path(params["splits_path"])
    temporary = path.with_name(f".tmp-{path.name}")
    save_splits(made, temporary)
    temporary.replace(path)
    return {"fingerprint": made.fingerprint}


@contextmanager
def _store_turn(store: str):
    """Wait for our turn to write the store (the store's own lock refuses a second writer at once)."""
    path = Path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.study-turn"), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _extract(params: dict) -> dict:
    from medtransfer.data.manifest import load_manifest
    from medtransfer.extract import ExtractOptions, extract_many

    options = ExtractOptions(
        weights=params["weights"], label_column=params["label_column"], batch_size=params["batch_size"],
        device=params["device"], precision=params["precision"], fmt=params["store_format"],
        pixel_cache=params["pixel_cache"], frames=params["frames"], progress=False,
    )
    with _store_turn(params["store"]):
        result = extract_many(params["manifest"], [params["backbone"]], params["store"], options)[0]
    marker = Path(params["marker"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = load_manifest(params["manifest"], label_column=params["label_column"], check_files=False,
                                min_classes=1, frames=params["frames"]).fingerprint
    temporary = marker.with_name(f".tmp-{marker.name}")
    temporary.write_text(json.dumps({"manifest": fingerprint, "group": result.group_key}))
    temporary.replace(marker)
    return {"computed": result.n_computed, "images": result.n_images}


def _quiet(message: str) -> None:
    """Adapt's per-task log lines: the study's own display says what runs."""


def _probe(params: dict) -> dict:
    from medtransfer.probe import run_probe

    table = run_probe(
        params["store"], params["splits_path"], [params["backbone"]], params["out"], heads=[params["head"]],
        weights=params["weights"], regimes=tuple(params["regimes"]), progress=False, device=params["device"],
        export=False, **params["options"],
    )
    return {"rows": len(table), "failed_rows": int((table["status"] != "ok").sum())}


def _adapt(params: dict) -> dict:
    from medtransfer.adapt import run_adapt

    regime = params["regime"]
    table = run_adapt(
        params["manifest"], params["splits_path"], backbone=params["backbone"], method=params["method"],
        out=params["out"], weights=params["weights"], options=params["options"], regimes=(regime,),
        folds=(params["fold"],), shots=(params["shots"],) if regime == "fewshot" else None,
        seeds=(params["seed"],) if regime != "full" else None, device=params["device"], resume=True,
        pixel_cache=params["pixel_cache"], frames=params["frames"], progress=False, log=_quiet, export=False,
        **params["config"],
    )
    return {"rows": len(table), "failed_rows": int((table["status"] != "ok").sum())}
