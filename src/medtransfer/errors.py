"""One exception type for every problem the user can fix; the CLI prints it as a one-line error."""


class MedtransferError(Exception):
    """A problem with the user's input or environment, stated so that they know what to do."""
