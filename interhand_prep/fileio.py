"""Atomic writes (temporary name, then rename) and reads that fail with a clear message."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted run therefore never leaves a file under the final name that looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: str | os.PathLike, array: Any) -> None:
    """np.save `array` (an ndarray, or a dict that numpy pickles) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=not isinstance(array, np.ndarray))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def load_npy(path: str | os.PathLike, allow_pickle: bool = False) -> Any:
    """np.load with a one-line InputError for a missing, truncated or foreign file.

    A pickled dict comes back as the dict (not a 0-d object array).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        value = np.load(path, allow_pickle=allow_pickle)
    except Exception as exc:  # numpy raises ValueError, EOFError, UnpicklingError, OSError...
        raise InputError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from exc
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    return value


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file (orjson when available) with a one-line InputError on failure."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: annotation file not found")
    data = path.read_bytes()
    try:
        import orjson

        return orjson.loads(data)
    except ImportError:  # pragma: no cover - orjson is a pinned dependency
        import json

        try:
            return json.loads(data)
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from exc
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


_held_locks: dict[Path, list] = {}


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files (".<name>.<random>.tmp") a killed run left under `folder`.

    Only call it while holding the folder's sequence lock. Symbolic links to image folders are not
    followed. Returns how many were removed.
    """
    removed = 0
    for dirpath, _, filenames in os.walk(folder, followlinks=False):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
    return removed


@contextlib.contextmanager
def sequence_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold <folder>/.lock for a run on one sequence; refuse when another process holds it.

    Re-entrant within a process (process.sh holds it over all stages of a sequence). The lock is
    an flock: the kernel releases it when the holder dies, so a killed run never leaves it stale.
    """
    import fcntl

    folder = ensure_writable(folder).resolve()
    if folder in _held_locks:
        _held_locks[folder][1] += 1
        try:
            yield
        finally:
            _held_locks[folder][1] -= 1
        return
    path = folder / ".lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(f"{folder}: another run is processing this sequence ({holder}); "
                         "wait for it to finish, then rerun") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    _held_locks[folder] = [handle, 1]
    remove_stale_temporaries(folder)  # safe: we are the only writer of this sequence now
    try:
        yield
    finally:
        del _held_locks[folder]
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
