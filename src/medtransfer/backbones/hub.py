"""Fetching published weights: a failed download becomes a one-line error that says what to do instead."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

from medtransfer.errors import MedtransferError, first_line


@functools.cache
def hub_offline() -> bool:
    """True when the Hugging Face Hub cannot be reached: ``HF_HUB_OFFLINE`` is set, or a 3 s connection to the
    endpoint fails. Loaders then pass ``local_files_only=True``, so a machine without network fails in seconds
    (from the local cache or with our one-line error) instead of retrying each request for about a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=3).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def download_guard(what: str, url: str | None = None, hint: str = "", *, instead: str = "") -> Iterator[None]:
    """Wrap code that may fetch weights: offline machines, gated repos and missing caches all end here.

    ``hint`` says which file(s) to fetch by hand, e.g. "download model.safetensors and config.json from
    https://huggingface.co/microsoft/rad-dino into a folder". ``instead``: what to do when the default advice
    (``--weights PATH`` or ``--weights random``) would not help, e.g. a model's config, needed for random weights
    too.
    """
    try:
        with _quiet_hub_logging():
            yield
    except MedtransferError:
        raise
    except (OSError, RuntimeError, ValueError, ImportError, KeyError) as exc:
        # URLError, requests/httpx errors and huggingface_hub's errors (HfHubHTTPError, LocalEntryNotFoundError)
        # are OSErrors; open_clip and timm raise RuntimeError for missing pretrained files.
        raise MedtransferError(_message(what, url, hint, exc, instead)) from exc


@contextlib.contextmanager
def _quiet_hub_logging() -> Iterator[None]:
    """huggingface_hub logs each failed request on stderr before raising: our one-line error says it all."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _message(what: str, url: str | None, hint: str, exc: BaseException, instead: str = "") -> str:
    where = f" from {url}" if url else ""
    todo = f"{hint}, then pass --weights PATH" if hint else "download them elsewhere and pass --weights PATH"
    if instead:
        todo = instead
    try:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of transformers
        GatedRepoError = RepositoryNotFoundError = ()  # noqa: N806
    if isinstance(exc, GatedRepoError):
        return (
            f"the weights of {what}{where} are in a gated repository: accept its licence on the Hugging Face "
            f"page, run `hf auth login` (or set HF_TOKEN), and try again; or {todo}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"repository for {what}{where} not found (or private without a token): check the name, or log in "
            f"with `hf auth login`; or {todo}"
        )
    detail = first_line(exc, 160, default="no detail")
    return (
        f"could not load the published weights of {what}{where} ({type(exc).__name__}: {detail}); "
        f"on a machine without network, {todo}" + ("" if instead else ", or use --weights random")
    )


def checkpoint_loaders(
    make: Callable[[], nn.Module],
    load: Callable[[nn.Module, Path], None],
    fetch: Callable[[], str | Path],
    what: str,
    url: str | None,
    hint: str,
    find_file: Callable[[Path], Path] | None = None,
) -> tuple[Callable[[bool], nn.Module], Callable[[Path], nn.Module]]:
    """``(build, local_loader)`` for a backbone whose published weights are one checkpoint file.

    ``build(pretrained)``: ``make()``, then (pretrained) ``fetch()`` the file behind the download guard and
    ``load`` it. ``local_loader(path)`` (``--weights PATH``): ``find_file`` turns a folder into its checkpoint
    file, then ``make()`` and ``load`` as above, so the published and the local weights take one code path.
    """

    def build(pretrained: bool) -> nn.Module:
        model = make()
        if pretrained:
            with download_guard(what, url=url, hint=hint):
                path = fetch()
            load(model, Path(path))
        return model

    def load_local(path: Path) -> nn.Module:
        if find_file is not None:
            path = find_file(path)
        model = make()
        load(model, path)
        return model

    return build, load_local
