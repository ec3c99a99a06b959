"""One exception type for every problem the user can fix; the CLI prints it as a one-line error."""


class MedtransferError(Exception):
    """A problem with the user's input or environment, stated so that they know what to do."""


def first_line(exc: BaseException, limit: int = 200, default: str | None = None) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters: a library's page-long exception text
    must not break our one-line errors. An empty message gives ``default`` (by default the exception's type)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if default is None else default
    return text.splitlines()[0][:limit]


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an exception: the reason a failed row, job or file carries."""
    return f"{type(exc).__name__}: {first_line(exc, limit, default='no message')}"
