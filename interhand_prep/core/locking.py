"""The per-sequence lock, and worker processes: how many a run may start, and that they die with
their parent."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .fileio import FILE_MODE, ensure_writable, remove_stale_temporaries

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


def usable_cpus() -> int:
    """How many CPUs this process may use: those of its affinity mask (taskset, cgroups, a Slurm
    task's binding), never more than SLURM_CPUS_PER_TASK where Slurm sets it; at least 1. Worker
    counts start here, not at os.cpu_count(), which counts every core of the node."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        count = min(count, int(slurm))
    return max(1, count)
