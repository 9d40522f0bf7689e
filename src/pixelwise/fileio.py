"""File writers: atomic writes (a temp file in the same folder, then ``os.replace``), and the
one writer each of JSON, image PNGs, mask PNGs and ``.npy`` arrays; the check of an output folder.

A crash, Ctrl-C or a full disk mid-write leaves the previous file intact and no temporary file
behind, never a truncated one. Files get the mode the user's umask gives (0644 with the usual
umask of 022), like any file a program creates with ``open``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import stat
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import PixelwiseError, short_message

# What to do about an OSError, by errno; the CLI prints it after the file and the system's words.
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some disk space or write somewhere else",
    errno.EDQUOT: "free some space in your quota or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "check its permissions or use another path",
    errno.EPERM: "check its permissions or use another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENOENT: "check the path",
    errno.EEXIST: "remove it or choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.ENOMEM: "not enough memory; close other programs or use smaller inputs",
    errno.EADDRINUSE: "another program uses that address; choose another --port or stop it",
    errno.EADDRNOTAVAIL: "this machine has no such address; check --host",
    errno.EIO: "the disk reported an input/output error; check the device",
}
# An OSError without an errno comes from a library reading a file (Pillow: "cannot identify image
# file ..."); its message names the file.
NO_ERRNO_HINT = "check that file"


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: ``<file>: <what the system says>; <what to do>``.

    ``[Errno 28] No space left on device: 'run/model.json'`` becomes ``run/model.json: No space
    left on device; free some disk space or write somewhere else``.
    """
    if exc.errno is None:
        return f"{short_message(exc, limit=200)}; {NO_ERRNO_HINT}"
    reason = exc.strerror or short_message(exc, limit=200)
    hint = OS_ERROR_HINTS.get(exc.errno, "check the path and try again")
    if exc.filename is not None and exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}: "
    elif exc.filename is not None:
        where = f"{exc.filename}: "
    else:
        where = ""
    return f"{where}{reason}; {hint}"


def _new_file(directory: Path, prefix: str, suffix: str) -> Path:
    """Create an empty file with a fresh name in ``directory``, with the umask's mode (not 0600)."""
    for _ in range(100):
        path = directory / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    On any failure (an exception, Ctrl-C, a full disk) the temporary file is removed and ``path``
    is left as it was; an OSError that names no file (a failed ``write``) is given ``path``'s name.
    The file gets the mode the umask gives (0644 with umask 022), whoever wrote it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_file(path.parent, f".{path.name}.", ".tmp")
    except OSError as e:
        _name_the_file(e, path)
        raise
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        yield tmp
        # A writer that makes its own file at `tmp` (safetensors does, with mode 0600) gets the
        # umask's mode back, like every other file pixelwise writes.
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            _name_the_file(e, path, tmp)
        raise


def _name_the_file(exc: OSError, path: Path, tmp: Path | None = None) -> None:
    """Point an OSError at the file the user asked for rather than at nothing or a temporary name."""
    if exc.filename is None or (tmp is not None and str(exc.filename) == str(tmp)):
        exc.filename = str(path)
        exc.filename2 = None


def prepare_output_dir(path: str | Path, what: str = "--out", create: bool = True) -> Path:
    """Make the folder ``path`` (and its parents) and check that files can be written in it.

    Call it before any work, so that an output that cannot be written is found in a second, not
    after an hour of training. Raises :class:`PixelwiseError` with one line naming ``path`` (and
    ``what``, the option that gave it) when ``path`` is a file, lies under a file, or cannot be
    created or written (no permission, a read-only file system, a full disk). With
    ``create=False`` nothing is left behind: the nearest existing folder is checked instead, so
    that a refused start leaves no empty folder. Returns the path.
    """
    path = Path(path).expanduser()
    try:
        existing = _nearest_existing(path, what)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        _probe_write(path if create else existing)
    except OSError as e:
        reason = e.strerror or e.__class__.__name__
        hint = OS_ERROR_HINTS.get(e.errno, "choose a folder you can write to")
        raise PixelwiseError(f"{what} {path}: cannot write there ({reason}); {hint}") from e
    return path


def _nearest_existing(path: Path, what: str) -> Path:
    """The first of ``path`` and its parents that exists; a PixelwiseError if that is not a folder."""
    for part in [path, *path.parents]:
        if part.exists() or part.is_symlink():
            if part.is_symlink() and not part.exists():
                raise PixelwiseError(f"{what} {path}: {part} is a broken link; remove it or choose another {what}")
            if not part.is_dir():
                kind = "is a file" if part == path else f"lies under {part}, which is a file"
                raise PixelwiseError(f"{what} {path} {kind}, not a folder; choose another {what}")
            return part
    return Path.cwd()


def _probe_write(directory: Path) -> None:
    """Create, write one byte to and remove a hidden file in ``directory``; OSError if it cannot."""
    probe = _new_file(directory, ".pixelwise-probe-", ".tmp")
    try:
        with open(probe, "wb") as f:
            f.write(b"\0")
    finally:
        with suppress(OSError):
            os.unlink(probe)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a binary file beside ``path``, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _check_png_array(array: np.ndarray) -> None:
    """A ``(H, W)`` uint8/uint16 or ``(H, W, 3)`` uint8 array passes; anything else is a ValueError."""
    if array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
        return
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return
    raise ValueError(f"a PNG needs (H, W) uint8/uint16 or (H, W, 3) uint8, got {array.dtype} {array.shape}")


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG file contents of a ``(H, W)`` uint8/uint16 grey or ``(H, W, 3)`` uint8 RGB array."""
    from PIL import Image

    array = np.ascontiguousarray(array)
    _check_png_array(array)
    buf = io.BytesIO()
    # Pillow picks the mode from the dtype and shape: L, I;16 or RGB.
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray, compress_level: int = 6) -> None:
    """Write a ``(H, W)`` uint8/uint16 grey or ``(H, W, 3)`` uint8 RGB array as a PNG, atomically.

    The parent folder is created if needed; a bad array raises ValueError before anything is written.
    """
    data = png_bytes(np.asarray(array), compress_level)
    atomic_write(path, lambda f: f.write(data))


def mask_array(mask: np.ndarray) -> np.ndarray:
    """Class indices as the array a mask PNG holds: uint8, or uint16 when an index is 256 or more."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"a mask is (H, W) integer class indices, got {mask.dtype} {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError(f"mask values must be in [0, 65535], got {mask.min()}..{mask.max()}")
    return mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16)


# The colour a palette mask gives to value 255 when no class has it: the usual ignore index, shown
# light grey-beige as in Pascal VOC so that unlabelled pixels stand out from every class.
IGNORE_PALETTE_COLOR = (224, 224, 192)


def mask_png_bytes(mask: np.ndarray, colors=None, compress_level: int = 6) -> bytes:
    """PNG file contents of ``(H, W)`` class indices; the stored values are the indices, unchanged.

    With ``colors`` ((r, g, b) per class, at most 256 classes) and every value below 256: a
    palette (P-mode) PNG whose palette holds the class colours, so that any viewer shows colours
    while ``np.asarray(Image.open(...))`` still gives the indices (value 255, the usual ignore
    index, is light grey unless a class has it). Otherwise 8-bit grey, 16-bit past 256 classes.
    An int in place of ``colors`` is taken as ``compress_level`` (the former positional call).
    """
    if isinstance(colors, (int, np.integer)) and not isinstance(colors, bool):
        colors, compress_level = None, int(colors)
    array = mask_array(mask)
    if colors is None or len(colors) > 256 or array.dtype != np.uint8:
        return png_bytes(array, compress_level)
    from PIL import Image

    buf = io.BytesIO()
    image = Image.frombytes("P", (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())
    image.putpalette(_mask_palette(colors), rawmode="RGB")
    image.save(buf, format="PNG", compress_level=compress_level, optimize=False)
    return buf.getvalue()


def _mask_palette(colors) -> list[int]:
    """768 palette bytes: the class colours first, value 255 the ignore colour, black elsewhere."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[255] = IGNORE_PALETTE_COLOR
    if len(colors):
        table[: len(colors)] = np.asarray(colors, dtype=np.int64).reshape(len(colors), 3).clip(0, 255)
    return table.reshape(-1).tolist()


def write_mask_png(path: str | Path, mask: np.ndarray, colors=None) -> None:
    """Write ``(H, W)`` class indices as a PNG, atomically: a palette PNG in the class colours when
    ``colors`` is given (see :func:`mask_png_bytes`), else 8-bit grey (16-bit past 256 classes)."""
    data = mask_png_bytes(mask, colors)
    atomic_write(path, lambda f: f.write(data))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Write a ``.npy`` array atomically (never pickled: object arrays are refused)."""
    array = np.asarray(array)
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
