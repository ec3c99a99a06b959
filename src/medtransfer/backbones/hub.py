"""Turn a failed weight download into a one-line error that says what to do instead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from medtransfer.errors import MedtransferError


@contextlib.contextmanager
def download_guard(what: str, url: str | None = None) -> Iterator[None]:
    """Wrap code that may fetch weights: offline machines, gated repos and missing caches all end here."""
    try:
        yield
    except MedtransferError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; hub errors are OSErrors
        where = f" from {url}" if url else ""
        raise MedtransferError(
            f"could not load the published weights of {what}{where} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}); on a machine without network, "
            "download them elsewhere and pass --weights PATH, or use --weights random"
        ) from exc
