"""The project's error type: one clear message naming the thing and the problem."""


class SqaccelError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits 2."""
