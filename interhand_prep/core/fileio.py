"""Atomic writes (temporary name, then rename) and guarded reads.

Every file the tools create goes through `write_bytes`: written under a hidden temporary name in
the target folder, given the mode the user's umask asks for (mkstemp creates 0600), then renamed.
A file whose bytes would not change is left alone, so a rerun that recomputes an output keeps its
modification time.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import tempfile
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


def _temporary_name(path: Path) -> Path:
    """A fresh hidden name beside `path` (".<name>.<random>.tmp"), chosen before anything is
    created, so that cleanup knows it whenever an interrupt comes."""
    import secrets

    return path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}"


def _open_temporary(tmp: Path) -> int:
    """Create `tmp` (it must not exist) for writing, with the mode the umask asks for."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, FILE_MODE)  # outputs must be as readable as the umask allows
    return fd


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
    tmp = _temporary_name(path)
    try:
        os.close(_open_temporary(tmp))
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
    # the temporary's name is known before it exists: a Ctrl-C at any point leaves nothing behind
    tmp = _temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(_open_temporary(tmp), "wb") as f:
            f.write(memoryview(data))
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


def relative_symlink(target: Path, link: Path) -> None:
    """A symbolic link at `link` to `target`, relative, so the two can move together."""
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or file system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(error, os.strerror(error), str(b))


def swap_temporary_pattern(dest: Path) -> re.Pattern:
    """The names of folder_swap's temporary folders for `dest` (and no other destination's)."""
    return re.compile(rf"^\.{re.escape(Path(dest).name)}\.(?:[a-z0-9_]{{8}}|old-\d+){re.escape(TEMPORARY_SUFFIX)}$")


@contextlib.contextmanager
def folder_swap(dest: Path) -> Iterator[Path]:
    """Build a folder under a hidden temporary name beside `dest`; when the block succeeds it takes
    `dest`'s place in one step (the two are exchanged, then the old one is deleted), so `dest` is
    never half old and half new, nor missing. The folder gets the umask's mode (mkdtemp would
    give 0700)."""
    import shutil

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=TEMPORARY_SUFFIX))
    os.chmod(tmp, 0o777 & ~UMASK)
    old = dest.parent / f".{dest.name}.old-{os.getpid()}{TEMPORARY_SUFFIX}"
    try:
        yield tmp
        if not (dest.exists() or dest.is_symlink()):
            os.replace(tmp, dest)
        elif not _exchange(tmp, dest):  # where the kernel cannot exchange: a short gap without dest
            os.replace(dest, old)
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after an exchange: the old folder
        shutil.rmtree(old, ignore_errors=True)


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
