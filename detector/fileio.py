"""Writing output files so that a reader never sees half of one, and checking early that they
can be written at all.

``atomic_write(path)`` writes to a temporary file in the same folder, fsyncs it and renames it
over ``path``: a crash leaves the old file or none, never a truncated one. ``tempfile.mkstemp``
creates its file with mode 0600 whatever the umask; the result here gets the mode a plain
``open(path, "w")`` would give (0666 less the umask), so outputs shared with a group stay
readable by it.

``check_writable(path)`` is for command lines: a run that ends by writing a file should fail
before the hours of work, not after them, when that file cannot be written.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "check_writable", "default_file_mode"]


def default_file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", fsync: bool = True):
    """``with atomic_write(p) as f: f.write(...)`` - ``p`` appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes, fsync: bool = True) -> Path:
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def check_writable(path, what: str = "output") -> None:
    """Raise ``OSError`` naming ``path`` when a file cannot be created there (its folder is
    missing and cannot be made, is not writable, or ``path`` is a folder)."""
    path = Path(path)
    if path.is_dir():
        raise OSError(f"{what} {path}: is a folder, expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{what} {path}: cannot create its folder {parent} ({e.strerror})") from e
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as e:
        raise OSError(f"{what} {path}: cannot write in {parent} ({e.strerror})") from e
    os.close(fd)
    os.unlink(tmp)
