"""Output folders and files: checked before any work, written atomically, with the umask's mode.

Each hostile case (an --out that is a file, a read-only folder, a full disk mid-write) gives one
line naming the path and leaves no half-written or temporary file behind.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelwise import fileio
from pixelwise.cli import main
from pixelwise.errors import PixelwiseError

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _refuse_writes_in(monkeypatch, directory, code=errno.EACCES):
    """Make creating a file in ``directory`` fail as permissions (or a read-only mount) would.

    Root ignores permission bits, so a ``chmod`` alone cannot make a folder unwritable for it.
    """
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)) == str(directory):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_prepare_output_dir_makes_the_folder(tmp_path):
    out = fileio.prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []


def test_prepare_output_dir_without_create_leaves_nothing(tmp_path):
    out = fileio.prepare_output_dir(tmp_path / "a" / "b", create=False)
    assert out == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(PixelwiseError) as e:
        fileio.prepare_output_dir(target)
    message = str(e.value)
    assert "\n" not in message and str(target) in message and "--out" in message and "not a folder" in message
    assert target.read_text() == "keep me"


def test_out_under_a_file(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    with pytest.raises(PixelwiseError, match="which is a file"):
        fileio.prepare_output_dir(target / "run", what="RUN")
    with pytest.raises(PixelwiseError, match="which is a file"):
        fileio.prepare_output_dir(target / "run", create=False)


@pytest.mark.skipif(AS_ROOT, reason="root ignores permission bits; see the next test")
def test_read_only_folder_by_permissions(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(PixelwiseError) as e:
            fileio.prepare_output_dir(parent / "run")
        assert str(parent / "run") in str(e.value) and "cannot write there" in str(e.value)
        with pytest.raises(PixelwiseError):
            fileio.prepare_output_dir(parent)
    finally:
        parent.chmod(0o700)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_unwritable_folder(tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    out.mkdir()
    _refuse_writes_in(monkeypatch, out, code)
    with pytest.raises(PixelwiseError) as e:
        fileio.prepare_output_dir(out)
    message = str(e.value)
    assert "\n" not in message and str(out) in message and os.strerror(code) in message
    assert fileio.OS_ERROR_HINTS[code] in message
    monkeypatch.undo()
    assert list(out.iterdir()) == []


def test_a_write_that_fails_mid_file_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.json"
    fileio.write_json(target, {"version": 1})
    before = target.read_bytes()

    def half_then_full(f):
        f.write(b'{"ver')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as e:
        fileio.atomic_write(target, half_then_full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_disk_full_through_a_writer(tmp_path, monkeypatch):
    target = tmp_path / "probs.npy"
    real_save = np.save

    def full_disk(f, array, **kwargs):
        real_save(f, array[:1], **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError):
        fileio.write_npy(target, np.zeros((4, 4)))
    assert list(tmp_path.iterdir()) == []


def test_no_temporary_file_after_ctrl_c(tmp_path):
    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(tmp_path / "a.bin", interrupted)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        fileio.write_json(tmp_path / "model.json", {})
        fileio.write_text(tmp_path / "config.yaml", "a: 1\n")
        fileio.write_npy(tmp_path / "x.npy", np.zeros(3))
        fileio.write_png(tmp_path / "x.png", np.zeros((2, 2), np.uint8))
        with fileio.atomic_path(tmp_path / "weights.bin") as tmp:
            tmp.write_bytes(b"w")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask) and len(modes) == 5


def test_cli_turns_os_errors_into_one_line(monkeypatch, capsys, tmp_path):
    from pixelwise.cli import demo

    target = tmp_path / "run" / "model.json"
    cases = {
        errno.ENOSPC: "No space left on device",
        errno.EROFS: "Read-only file system",
        errno.EACCES: "Permission denied",
        errno.ENOTDIR: "Not a directory",
    }
    for code, words in cases.items():

        def failing(args, code=code):
            raise OSError(code, os.strerror(code), str(target))

        monkeypatch.setattr(demo, "run", failing)
        assert main(["demo"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"pixelwise: error: {target}: {words}; {fileio.OS_ERROR_HINTS[code]}")


def test_cli_interrupt_and_user_error(monkeypatch, capsys):
    from pixelwise.cli import demo

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "pixelwise: interrupted\n"

    def mistake(args):
        raise PixelwiseError("no such run: x; train one first")

    monkeypatch.setattr(demo, "run", mistake)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == "pixelwise: error: no such run: x; train one first\n"


def test_a_real_full_disk_is_one_line(tmp_path):
    """/dev/full answers every write with ENOSPC: the real error, in a real process, named after the
    file being written, which stays as it was, with no temporary file left."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    target = tmp_path / "metrics.json"
    target.write_text("{}")
    code = (
        "import sys\n"
        "from pixelwise import fileio\n"
        "from pixelwise.cli import demo, main\n"
        "def run(args):\n"
        "    full = open('/dev/full', 'wb', buffering=0)\n"
        f"    fileio.atomic_write({str(target)!r}, lambda f: full.write(b'x'))\n"
        "demo.run = run\n"
        "sys.exit(main(['demo']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    hint = fileio.OS_ERROR_HINTS[errno.ENOSPC]
    assert proc.stderr == f"pixelwise: error: {target}: No space left on device; {hint}\n"
    assert target.read_text() == "{}" and _leftovers(tmp_path) == []


def test_a_writer_that_makes_its_own_file_gets_the_umask_mode(tmp_path):
    """safetensors writes its own file at the temporary path, with mode 0600."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with fileio.atomic_path(tmp_path / "model.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        with fileio.atomic_path(tmp_path / "other.bin") as tmp:
            os.unlink(tmp)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {
        "model.safetensors": 0o644,
        "other.bin": 0o644,
    }


def test_a_name_too_long_is_one_line(tmp_path):
    """A real ENAMETOOLONG from the file system, not a simulation."""
    with pytest.raises(PixelwiseError) as e:
        fileio.prepare_output_dir(tmp_path / ("x" * 300))
    assert "\n" not in str(e.value) and "File name too long" in str(e.value) and "shorter path" in str(e.value)


def test_a_broken_link_as_out(tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(PixelwiseError, match="broken link"):
        fileio.prepare_output_dir(link)
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_a_relative_out_under_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fileio.prepare_output_dir("runs/a", create=False) == fileio.Path("runs/a")
    assert list(tmp_path.iterdir()) == []
    assert fileio.prepare_output_dir("runs/a").is_dir()


def test_a_folder_in_the_way_of_a_file(tmp_path):
    """os.replace onto a folder fails: the folder is untouched and no temporary file is left."""
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(OSError) as e:
        fileio.write_json(tmp_path / "metrics.json", {"miou": 0.5})
    assert e.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert (tmp_path / "metrics.json").is_dir()


def test_no_temporary_file_when_the_folder_cannot_be_made(tmp_path):
    (tmp_path / "a").write_text("a file where a folder should be")
    with pytest.raises(OSError) as e:
        fileio.write_text(tmp_path / "a" / "b.txt", "x")
    assert e.value.errno in (errno.ENOTDIR, errno.EEXIST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


@pytest.mark.parametrize(
    "exc, expected",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "run/model.json"),
            "run/model.json: No space left on device; free some disk space or write somewhere else",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"),
            "/mnt/ro/x: Read-only file system; the file system is read-only; write somewhere else",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "data/x.png"),
            "data/x.png: Permission denied; check its permissions or use another path",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device; free some disk space"),
        (OSError("cannot identify image file 'x.png'"), "cannot identify image file 'x.png'; check that file"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b"), "a -> b: Invalid cross-device link"),
        (OSError(12345, "Strange", "f"), "f: Strange; check the path and try again"),
    ],
)
def test_os_error_message(exc, expected):
    message = fileio.os_error_message(exc)
    assert message.startswith(expected) and "\n" not in message


def test_a_multi_line_library_error_is_one_line(monkeypatch, capsys):
    from pixelwise.cli import demo

    def unreadable(args):
        raise OSError("image file is truncated\n  (5 bytes not processed)\nmore detail")

    monkeypatch.setattr(demo, "run", unreadable)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == "pixelwise: error: image file is truncated; check that file\n"


@pytest.mark.skipif(not AS_ROOT, reason="needs root to run a process as another user")
def test_read_only_folder_for_a_user_without_permission():
    """As root, a real permission check: the command runs as the user nobody (uid 65534).

    ``setpriv`` changes the user and then starts Python, which may live where nobody cannot look
    (under /root); ``subprocess.run(user=...)`` would change the user first and fail to start it.
    """
    import shutil
    import tempfile

    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv here")
    top = tempfile.mkdtemp(prefix="pixelwise-perm-")
    try:
        os.chmod(top, 0o755)
        locked = os.path.join(top, "locked")
        os.mkdir(locked, 0o555)
        os.chmod(locked, 0o555)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        proc = subprocess.run(
            [*nobody, sys.executable, "-m", "pixelwise", "demo", "--out", os.path.join(locked, "run")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=top,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (
            f"pixelwise: error: --out {locked}/run: cannot write there (Permission denied); "
            f"{fileio.OS_ERROR_HINTS[errno.EACCES]}\n"
        )
        assert os.listdir(locked) == []
    finally:
        shutil.rmtree(top)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    old=st.binary(max_size=200),
    new=st.binary(max_size=200),
    fail_after=st.one_of(st.none(), st.integers(min_value=0, max_value=200)),
    code=st.sampled_from([errno.ENOSPC, errno.EIO, errno.EDQUOT]),
)
def test_atomic_write_is_all_or_nothing(tmp_path, old, new, fail_after, code):
    """Whatever the contents and wherever the write fails, the file holds the old or the new bytes
    in full, and no temporary file is left."""
    target = tmp_path / "data.bin"
    target.write_bytes(old)

    def write(f):
        if fail_after is not None and fail_after <= len(new):
            f.write(new[:fail_after])
            raise OSError(code, os.strerror(code))
        f.write(new)

    try:
        fileio.atomic_write(target, write)
        assert target.read_bytes() == new
    except OSError as e:
        assert e.filename == str(target)
        assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]
