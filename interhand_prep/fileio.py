"""Atomic writes (temporary name, then rename), guarded reads, and the per-sequence lock.

Every file the tools create goes through `write_bytes`: written under a hidden temporary name in
the target folder, given the mode the user's umask asks for (mkstemp creates 0600), then renamed.
A file whose bytes would not change is left alone, so a rerun that recomputes an output keeps its
modification time.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import InputError


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it; set straight back (import time, one thread)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
TEMPORARY_SUFFIX = ".tmp"


def _temporary_beside(path: Path) -> tuple[int, Path]:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    os.fchmod(fd, FILE_MODE)  # mkstemp gives 0600; outputs must be as readable as the umask allows
    return fd, Path(tmp)


def _with_filename(exc: OSError, path: Path) -> OSError:
    """The same error with the final file's name (numpy's own messages lack both)."""
    code = exc.errno or errno.EIO
    return OSError(code, exc.strerror or os.strerror(code), str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (mode per umask); rename it onto `path` only if the
    block succeeds. An interrupted run never leaves a file under the final name that looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # whatever wrote it may have replaced the file
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def same_content(path: Path, data: bytes | memoryview) -> bool:
    """Whether `path` is a regular file holding exactly `data`."""
    try:
        if path.is_symlink() or path.stat().st_size != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == bytes(data)
    except OSError:
        return False


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> bool:
    """Write `data` to `path` atomically, unless the file already holds exactly these bytes.

    Returns True when the file was written. OS errors (disk full, permissions) name `path`.
    """
    path = Path(path)
    if same_content(path, data):
        if path.stat().st_mode & 0o777 != FILE_MODE and os.access(path, os.W_OK):
            os.chmod(path, FILE_MODE)  # written by an older version with mode 0600
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary_beside(path)
    except OSError as exc:
        raise _with_filename(exc, path) from None
    try:
        view = memoryview(data)
        with os.fdopen(fd, "wb") as f:
            f.write(view)
        os.replace(tmp, path)
    except OSError as exc:
        raise _with_filename(exc, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


def write_text(path: str | os.PathLike, text: str) -> bool:
    return write_bytes(path, text.encode("utf-8"))


def npy_bytes(array: Any) -> bytes:
    """The .npy serialisation of an ndarray, or of a dict / list (pickled, as numpy does)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=not isinstance(array, np.ndarray))
    return buf.getvalue()


def save_npy(path: str | os.PathLike, array: Any) -> bool:
    """np.save `array` atomically (skipped when the file already holds the same bytes)."""
    return write_bytes(path, npy_bytes(array))


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """np.load of a plain (not pickled) array, with a one-line InputError for a missing, truncated
    or foreign file. Pickled .npy files are read through `safe_pickle.read_npy`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, EOFError, OSError...
        raise InputError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from exc


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file with a one-line InputError on failure."""
    import orjson

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    try:
        return orjson.loads(path.read_bytes())
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and check that files can be written there (InputError if not)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None
    return folder


def check_free_space(folder: str | os.PathLike, needed_bytes: float, what: str) -> None:
    """One-line error before any work when the disk cannot hold `needed_bytes` (an estimate)."""
    import shutil

    free = shutil.disk_usage(folder).free
    if needed_bytes > free:
        raise InputError(f"{folder}: {what} need about {needed_bytes / 1e9:.2f} GB, only {free / 1e9:.2f} GB is free "
                         "on this disk; free some space (or write elsewhere with --out-root)")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files (".<name>.<random>.tmp") a killed run left under `folder`.

    Only call it while holding the folder's sequence lock. Symbolic links to image folders are not
    followed. Returns how many were removed.
    """
    removed = 0
    for dirpath, _, filenames in os.walk(folder, followlinks=False):
        for name in filenames:
            if name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
    return removed


def remove_files(paths, root: Path) -> int:
    """Delete `paths` (files or links) and then every folder under `root` they leave empty."""
    removed = 0
    parents = set()
    for path in paths:
        try:
            os.unlink(path)
            removed += 1
            parents.add(Path(path).parent)
        except FileNotFoundError:
            pass
    root = Path(root)
    for parent in sorted(parents, key=lambda p: -len(p.parts)):
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent
    return removed


# ---------------------------------------------------------------------------------------------
# The sequence lock

LOCK_NAME = ".lock"
HEARTBEAT_SECONDS = 60.0
# A lock written on another host whose holder has not refreshed it for this long is abandoned.
STALE_LOCK_SECONDS = 15 * 60.0


class SequenceLock:
    """<folder>/.lock while a run writes into one sequence folder; refused while another holds it.

    The file exists only while a run works (a rerun with nothing to do never creates it). It is an
    flock, which the kernel (or the NFS server) releases when its holder dies, plus a line naming
    the holder (host, pid, start time) for the message. Worker processes receive the locked
    descriptor (`inheritable`), so the lock lasts until the last of them is gone. A lock file whose
    flock is free is left over by a dead run and taken over; on file systems whose flock does not
    reach other hosts, a holder on another host keeps its lock fresh (mtime, every minute) and is
    taken over only when it has not done so for STALE_LOCK_SECONDS.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self._stop = threading.Event()

    def acquire(self) -> "SequenceLock":
        import fcntl

        ensure_writable(self.folder)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise InputError(f"{self.folder}: another run is processing this sequence ({holder}); "
                                 "wait for it to finish, then rerun") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our flock
                os.close(fd)
                continue
            previous = _read_holder(fd, raw=True)
            if previous and previous.get("host") != socket.gethostname():
                age = time.time() - os.fstat(fd).st_mtime
                if age < STALE_LOCK_SECONDS:
                    os.close(fd)
                    raise InputError(f"{self.folder}: another run is processing this sequence "
                                     f"({_describe(previous)}); wait for it to finish, or remove {self.path} "
                                     "if no run is active there")
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
            self.fd = fd
            break
        remove_stale_temporaries(self.folder)  # we are the only writer of this sequence now
        threading.Thread(target=self._heartbeat, daemon=True, name="lock-heartbeat").start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError, TypeError):
                os.utime(self.fd)

    def inheritable(self):
        """An object that hands the locked descriptor to a spawned worker (see `hold_in_worker`)."""
        return _InheritedDescriptor(self.fd)

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)  # while still locked: nobody can take this inode after us
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "SequenceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int, raw: bool = False):
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
        if not isinstance(holder, dict):
            holder = {}
    except (OSError, ValueError):
        holder = {}
    return holder if raw else (_describe(holder) if holder else "another process")


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"


class _InheritedDescriptor:
    """Pickles as multiprocessing's DupFd, so a spawned process receives a duplicate of `fd`."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _adopt_descriptor, (reduction.DupFd(self.fd),)


_adopted: list[int] = []


def _adopt_descriptor(dup) -> int:
    fd = dup.detach()
    _adopted.append(fd)  # kept open for the life of the worker: the flock lives while any copy does
    return fd


_held: dict[Path, list] = {}


@contextlib.contextmanager
def sequence_lock(folder: str | os.PathLike) -> Iterator[SequenceLock]:
    """Hold the sequence lock of `folder` for the block; re-entrant within a process."""
    key = Path(folder).resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield _held[key][0]
        finally:
            _held[key][1] -= 1
        return
    lock = SequenceLock(folder).acquire()
    _held[key] = [lock, 1]
    try:
        yield lock
    finally:
        del _held[key]
        lock.release()


def die_with_parent(parent: int) -> None:
    """In a worker process: be killed when the parent dies (Linux), and exit if it already has."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)
