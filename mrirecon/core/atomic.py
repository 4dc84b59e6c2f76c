"""Atomic file writes: a temporary file in the same folder, renamed into place.

Every file mrirecon writes (checkpoints, results, reconstructions, reports, caches) goes through
here, so a kill, a full disk or any other failure leaves the previous file intact and never a
truncated one. The temporary file lives in the target's own folder because a rename is atomic
only within one filesystem (a temporary file in ``/tmp`` would turn the rename into a copy).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from mrirecon.errors import UserError

TEMP_SUFFIX = ".partial"
# Out of space, out of quota, or past the file size limit.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def describe_os_error(err: OSError) -> str:
    """A short reason for a failed write: 'no space left on device', 'permission denied', ..."""
    if err.errno in DISK_FULL:
        return f"disk full: {os.strerror(err.errno).lower()}"
    if err.errno is not None:
        return os.strerror(err.errno).lower()
    return str(err) or type(err).__name__


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it is synced and renamed onto ``path``.

    Write the file's content to the yielded path (with any library). If the block raises, the
    temporary file is removed and ``path`` is left as it was.

    Raises:
        UserError: The folder cannot be created or the file cannot be written (permissions,
            disk full); the message names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise UserError(f"{path}: cannot write ({describe_os_error(err)})") from None
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{path}: cannot write ({describe_os_error(err)})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replaces ``path`` with ``data``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replaces ``path`` with ``text`` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Deletes temporary files that a killed process left in ``folder``."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Creates ``folder`` if needed and proves a file can be written there, before long work.

    Raises:
        UserError: The folder cannot be created or written to.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder")
    write_bytes(folder / ".mrirecon-write-test", b"")
    with contextlib.suppress(OSError):
        (folder / ".mrirecon-write-test").unlink()
    return folder
