"""Errors a user can act on.

A :class:`PixelwiseError` means the input or the arguments are wrong, not the program: the CLI
prints its message on one line and exits with status 2, without a traceback. Anything else is a
bug and keeps its traceback.
"""


class PixelwiseError(Exception):
    """A user mistake: bad data, bad arguments, a missing run. The message says what to do."""
