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

from medtransfer.errors import MedtransferError, failure_reason
from medtransfer.study.spec import import_plugins


def run_job(params: dict) -> dict:
    """Run one job (``params`` from ``plan.Job.params``); returns what it did. Raises on failure."""
    import_plugins(params.get("plugins", []))
    start = time.perf_counter()
    kind = params["kind"]
    runner = {"splits": _splits, "extract": _extract, "probe": _probe, "adapt": _adapt}[kind]
    detail = runner(params)
    return {"kind": kind, "seconds": time.perf_counter() - start, **detail}


# what differs between the jobs of one bundle; everything else (manifest, splits, backbone, settings) is shared
_BUNDLE_VARYING = {"adapt": ("regime", "fold", "shots", "seed", "task_name"), "probe": ("head",)}


def run_bundle(items: list[tuple[str, dict]]) -> list[tuple[str, str, dict]]:
    """Run (job id, params) items in one process; returns (job id, error or "", detail) per job.

    Adapt jobs sharing everything but their (regime, fold, shots, seed) are one ``run_adapt`` call over exactly
    their tasks (manifest, splits, weights and pixels loaded once, the pristine weights copied per task); probe
    jobs sharing everything but the head are one ``run_probe`` call over their heads (features read once). When
    such a call raises, its jobs run again one by one (finished ones are kept by resume / skip-finished), so a
    failing job fails alone and the others' outcomes stand."""
    outcomes: dict[str, tuple[str, str, dict]] = {}
    for group in _groups(items):
        if len(group) > 1:
            start = time.perf_counter()
            try:
                detail = _run_many([params for _, params in group])
            except Exception:  # noqa: BLE001 - rerun alone below, so that each job's own error is recorded
                pass
            else:
                share = (time.perf_counter() - start) / len(group)
                for job_id, _ in group:
                    outcomes[job_id] = (job_id, "", {"kind": group[0][1]["kind"], "seconds": share,
                                                     "bundle": len(group), **detail})
                continue
        for job_id, params in group:
            outcomes[job_id] = _run_alone(job_id, params)
    return [outcomes[job_id] for job_id, _ in items]


def _run_alone(job_id: str, params: dict) -> tuple[str, str, dict]:
    try:
        return job_id, "", run_job(params)
    except Exception as exc:  # noqa: BLE001 - recorded and retried by the driver, the bundle goes on
        return job_id, failure_reason(exc), {}


def _groups(items: list[tuple[str, dict]]) -> list[list[tuple[str, dict]]]:
    groups: dict[str, list[tuple[str, dict]]] = {}
    for job_id, params in items:
        varying = _BUNDLE_VARYING.get(params["kind"])
        if varying is None:
            key = f"alone/{job_id}"
        else:
            key = json.dumps({k: v for k, v in params.items() if k not in varying}, sort_keys=True, default=str)
        groups.setdefault(key, []).append((job_id, params))
    return list(groups.values())


def _run_many(group: list[dict]) -> dict:
    first = group[0]
    import_plugins(first.get("plugins", []))
    if first["kind"] == "probe":
        return _probe(first, heads=[params["head"] for params in group])
    return _adapt(first, tasks=group)


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


def _probe(params: dict, heads: list[str] | None = None) -> dict:
    from medtransfer.probe import run_probe

    table = run_probe(
        params["store"], params["splits_path"], [params["backbone"]], params["out"],
        heads=heads or [params["head"]],
        weights=params["weights"], regimes=tuple(params["regimes"]), progress=False, device=params["device"],
        export=False, **params["options"],
    )
    return {"rows": len(table), "failed_rows": int((table["status"] != "ok").sum())}


def _adapt(params: dict, tasks: list[dict] | None = None) -> dict:
    """One ``run_adapt`` call over the tasks of ``tasks`` (a bundle's params; default: this job alone)."""
    from medtransfer.adapt import run_adapt

    tasks = tasks or [params]
    fewshot = [t for t in tasks if t["regime"] == "fewshot"]
    table = run_adapt(
        params["manifest"], params["splits_path"], backbone=params["backbone"], method=params["method"],
        out=params["out"], weights=params["weights"], options=params["options"],
        regimes=tuple(sorted({t["regime"] for t in tasks})), folds=tuple(sorted({t["fold"] for t in tasks})),
        shots=tuple(sorted({t["shots"] for t in fewshot})) or None,
        seeds=tuple(sorted({t["seed"] for t in tasks if t["regime"] != "full"})) or None,
        names=tuple(t["task_name"] for t in tasks), device=params["device"], resume=True,
        pixel_cache=params["pixel_cache"], frames=params["frames"], progress=False, log=_quiet, export=False,
        **params["config"],
    )
    return {"rows": len(table), "failed_rows": int((table["status"] != "ok").sum())}
