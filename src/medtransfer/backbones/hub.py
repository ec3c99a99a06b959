"""Turn a failed weight download into a one-line error that says what to do instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from medtransfer.errors import MedtransferError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else "no detail"


@contextlib.contextmanager
def download_guard(what: str, url: str | None = None, hint: str = "") -> Iterator[None]:
    """Wrap code that may fetch weights: offline machines, gated repos and missing caches all end here.

    ``hint`` says which file(s) to fetch by hand, e.g. "download model.safetensors and config.json from
    https://huggingface.co/microsoft/rad-dino into a folder".
    """
    try:
        yield
    except MedtransferError:
        raise
    except (OSError, RuntimeError, ValueError, ImportError, KeyError) as exc:
        # URLError, requests/httpx errors and huggingface_hub's errors (HfHubHTTPError, LocalEntryNotFoundError)
        # are OSErrors; open_clip and timm raise RuntimeError for missing pretrained files.
        raise MedtransferError(_message(what, url, hint, exc)) from exc


def _message(what: str, url: str | None, hint: str, exc: BaseException) -> str:
    where = f" from {url}" if url else ""
    todo = f"{hint}, then pass --weights PATH" if hint else "download them elsewhere and pass --weights PATH"
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
    return (
        f"could not load the published weights of {what}{where} ({type(exc).__name__}: {_first_line(exc)}); "
        f"on a machine without network, {todo}, or use --weights random"
    )
