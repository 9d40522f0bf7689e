"""Errors a user can act on.

A :class:`PixelwiseError` means the input or the arguments are wrong, not the program: the CLI
prints its message on one line and exits with status 2, without a traceback. Anything else is a
bug and keeps its traceback.
"""


class PixelwiseError(Exception):
    """A user mistake: bad data, bad arguments, a missing run. The message says what to do."""


def short_message(exc: BaseException, limit: int = 120, with_type: bool = False) -> str:
    """The first line of ``exc``'s message, cut to ``limit`` characters, for a one-line error.

    Libraries raise multi-line messages (ONNX, PyTorch, Pillow); a user needs the first line.
    An empty message gives the exception's class name; ``with_type`` prefixes it always
    (``ValueError: ...``).
    """
    text = str(exc).strip()
    first = text.splitlines()[0][:limit] if text else ""
    name = exc.__class__.__name__
    if not first:
        return name
    return f"{name}: {first}" if with_type else first
