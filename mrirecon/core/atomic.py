"""Atomic file writes: a temporary file in the same folder, renamed into place.

Every file mrirecon writes (checkpoints, results, reconstructions, reports, caches) goes through
here, so a kill, a full disk or any other failure leaves the previous file intact and never a
truncated one. The temporary file lives in the target's own folder because a rename is atomic
only within one filesystem (a temporary file in ``/tmp`` would turn the rename into a copy).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

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


@functools.cache
def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0o666 less the umask (mkstemp's
    temporary files are 0o600 whatever the umask). Read once: setting the umask to read it is
    process-wide, and no thread should create a file in between."""
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_file(path: str | os.PathLike) -> None:
    """Flushes a written file to the disk, so that a rename onto its final name never exposes a
    file whose content is still only in memory."""
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
        os.fchmod(fd, _file_mode())
        os.close(fd)
    except OSError as err:
        raise UserError(f"{final_path(path)}: cannot write ({describe_os_error(err)})") from None
    try:
        yield Path(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{final_path(path)}: cannot write ({describe_os_error(err)})") from None
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


# --- whole output folders -------------------------------------------------------------------
_STAGING = ".staging-"
_REPLACED = ".replaced-"
_LOCK = ".lock"
# The staging folder's name for every process of one run: the lead process sets it before the
# trainer starts its other processes, which Lightning's launcher starts with its environment.
RUN_TOKEN_VARIABLE = "MRIRECON_RUN_TOKEN"
# Where the staging folders now being written will be once swapped in (staging -> final), for
# the paths a command prints and records while it writes into a staging folder.
_ACTIVE_STAGING: list[tuple[Path, Path]] = []


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def is_lead_process() -> bool:
    """Whether this process leads its run: the only process of a plain run, or rank 0 of a
    distributed one, judged from what the launchers set before their processes can talk to each
    other (torchrun's RANK, srun's SLURM_PROCID, NODE_RANK and LOCAL_RANK of Lightning's own
    launcher, which sets them in the processes it starts)."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


def _run_token() -> str:
    """A name every process of this run agrees on without talking to the others.

    Lightning's launcher starts the other processes with the lead's environment, so the lead's
    choice reaches them; torchrun and srun start every process themselves, each with the job's
    id. A process that is not the lead and has none of these cannot know the name.

    Raises:
        UserError: a process of a distributed run that has no way to learn the name.
    """
    token = os.environ.get(RUN_TOKEN_VARIABLE)
    if token:
        return token
    if "TORCHELASTIC_RUN_ID" in os.environ:
        token = f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}-{os.environ.get('MASTER_PORT', '')}"
    elif int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        token = f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '')}"
    elif is_lead_process():
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
    else:
        raise UserError(f"{RUN_TOKEN_VARIABLE}: this process is one of a distributed run that mrirecon cannot "
                        f"identify; set {RUN_TOKEN_VARIABLE} to one value for all its processes")
    os.environ[RUN_TOKEN_VARIABLE] = token
    return token


def _remove_stale_staging(folder: Path, own: Path) -> None:
    """What a killed :func:`staged_folder` left: staging folders whose lead no longer holds
    their lock, and an entry set aside in the middle of the final swap (put back if the new one
    never arrived)."""
    for staging in folder.parent.glob(f".{folder.name}{_STAGING}*"):
        if staging == own:
            continue
        try:
            FolderLock(staging, "in use").release()
        except UserError:
            continue  # held: another run is writing it
        shutil.rmtree(staging, ignore_errors=True)
    if folder.is_dir():
        for aside in folder.glob(f".*{_REPLACED}*"):
            name, _, pid = aside.name[1:].rpartition(_REPLACED)
            if _pid_alive(pid):
                continue
            if (folder / name).exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.rename(aside, folder / name)
        remove_stale_temporaries(folder)


def _swap_in(staging: Path, folder: Path) -> None:
    """Moves every entry of ``staging`` into ``folder``, replacing entries of the same name;
    entries of ``folder`` that the staging lacks (the user's own files) stay."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in sorted(staging.iterdir()):
        if entry.name == _LOCK:
            continue
        dest = folder / entry.name
        if os.path.lexists(dest) and (dest.is_symlink() or dest.is_dir() or entry.is_dir()):
            # A folder (or a link, say to a folder on another disk) cannot be renamed over in
            # one step: set it aside, move the new entry in, then drop what was set aside (a
            # link alone, never what it points to).
            aside = folder / f".{entry.name}{_REPLACED}{os.getpid()}"
            os.rename(dest, aside)
            os.rename(entry, dest)
            if aside.is_symlink() or not aside.is_dir():
                aside.unlink()
            else:
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(entry, dest)


def _wait_for_other_processes() -> None:
    """A barrier over the processes of a distributed run (none without one): the lead swaps a
    staging folder in only once every process has written its part."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def final_path(path: str | os.PathLike) -> Path:
    """Where ``path``, written now under a :func:`staged_folder`, will be once it is swapped in
    (``path`` itself when it is under none): the path to print or record."""
    path = Path(path)
    for staging, folder in reversed(_ACTIVE_STAGING):  # innermost first: stagings may nest
        try:
            path = folder / path.relative_to(staging)
        except ValueError:
            continue
    return path


def is_staged(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in a :func:`staged_folder` now being written (whose swap will make
    everything written there appear at once)."""
    return final_path(path) != Path(path)


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty folder beside ``folder`` to write a whole output into; on success its
    entries replace those of ``folder``, on any failure nothing of it reaches ``folder``.

    A report or a baseline is then all new or all old: a failure half-way (a bad argument found
    late, a full disk, Ctrl-C) leaves the previous output as it was, not a mix of both, and never
    a file that links to one that was not written. Only the final renames, microseconds long,
    are not one step. What a killed run left (its staging folder, an entry set aside during the
    swap, temporary files) is cleared by the next run.

    In a distributed run every process writes its part into the same staging folder (named by
    :func:`_run_token`); the lead creates and locks it, waits for the others at the end, and
    alone swaps it in.

    Raises:
        UserError: ``folder`` exists and is not a folder, or its parent is not writable.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder")
    lead = is_lead_process()
    staging = folder.parent / f".{folder.name}{_STAGING}{_run_token()}"
    lock = None
    created = first_missing_folder(folder.parent) if lead else None  # taken back on failure
    if lead:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_staging(folder, staging)
            shutil.rmtree(staging, ignore_errors=True)  # this process's own, from an earlier failed call
            staging.mkdir()
        except OSError as err:
            remove_empty_folders(created)
            raise UserError(f"{folder}: cannot write ({describe_os_error(err)})") from None
        lock = FolderLock(staging, "in use")
    _ACTIVE_STAGING.append((staging, folder))
    finished = False
    try:
        yield staging
        _wait_for_other_processes()
        if lead:
            try:
                _swap_in(staging, folder)
            except OSError as err:
                raise UserError(f"{folder}: cannot write ({describe_os_error(err)})") from None
        finished = True
    finally:
        _ACTIVE_STAGING.remove((staging, folder))
        if lead:
            lock.release()
            shutil.rmtree(staging, ignore_errors=True)
            if not finished:
                remove_empty_folders(created)


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


def first_missing_folder(folder: str | os.PathLike) -> Path | None:
    """The outermost folder on the way to ``folder`` that does not exist yet (None if ``folder``
    exists): what creating ``folder`` would add, for :func:`remove_empty_folders` to take back."""
    folder = Path(folder).absolute()
    if folder.exists():
        return None
    created = folder
    while not created.parent.exists():
        created = created.parent
    return created


def remove_empty_folders(top: Path | None) -> None:
    """Removes ``top`` and the folders under it that hold no file (children before parents)."""
    if top is None or not top.is_dir():
        return
    for root, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(root)  # only empty folders: rmdir refuses any other


class FolderLock:
    """An exclusive lock on a folder, held by this process until :meth:`release` (or its exit).

    An advisory ``flock`` on ``<folder>/.lock``: the kernel drops it when the process dies, so a
    killed run never leaves the folder locked. Where ``fcntl`` is missing (Windows) nothing is locked.

    Raises:
        UserError: another process holds the lock; ``busy`` says what that means.
    """

    def __init__(self, folder: str | os.PathLike, busy: str) -> None:
        self.path = Path(folder) / ".lock"
        self._file = None
        try:
            import fcntl
        except ImportError:
            return
        try:
            self._file = open(self.path, "a")
        except OSError as err:
            raise UserError(f"{self.path}: cannot write ({describe_os_error(err)})") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise UserError(f"{Path(folder)}: {busy}") from None

    def release(self) -> None:
        # The file stays: removing it would let a process that opened it before the removal and
        # one that creates it anew both hold "the" lock.
        if self._file is not None:
            self._file.close()
            self._file = None


def file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode): one file under any name (symbolic and hard links, other spellings);
    None for a path that does not exist."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def check_outputs(outputs: Iterable[tuple[str | os.PathLike, str | os.PathLike]], inputs: Iterable[str | os.PathLike],
                  hint: str = "choose another output folder") -> None:
    """Refuses, before any work, a plan of writes that would replace a file the command reads or
    write two outputs under one name.

    Paths are compared as the filesystem sees them, whatever their spelling: resolved (relative,
    ``./``, ``..``, symlinked folders and files) and, where both exist, by device and inode
    (hard links).

    Args:
        outputs: (file to be written, what it is made from) pairs; the source is named in messages.
        inputs: every file the command reads.
        hint: what the user can do, appended to the message.

    Raises:
        UserError: naming the output and the input it would replace, or the two sources that
            would share one output.
    """
    read_paths: dict[Path, Path] = {}
    read_ids: dict[tuple[int, int], Path] = {}
    for path in map(Path, inputs):
        read_paths[path.resolve()] = path
        identity = file_id(path)
        if identity is not None:
            read_ids[identity] = path
    written: dict[Path, Path] = {}
    for out, source in outputs:
        out, source = Path(out), Path(source)
        resolved = out.resolve()
        replaced = read_paths.get(resolved) or read_ids.get(file_id(out) or (-1, -1))
        if replaced is not None:
            raise UserError(f"{out}: would overwrite the input {replaced}; {hint}")
        if resolved in written:
            raise UserError(f"{out}: {written[resolved]} and {source} would both be written here; {hint}")
        written[resolved] = source
