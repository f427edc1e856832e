"""Reading pickles without running their code: an allow-list of exact (module, name) globals.

A pickle names the functions and classes that rebuild its objects, and `pickle.load` calls them:
a file that reduces to `builtins.eval` or `os.system` runs whatever it carries. Both kinds of
pickle this project reads, the official MANO model files and the pickled `.npy` outputs
(annots.npy, params/*.npy), need only a handful of constructors, listed here by exact name; any
other global is refused before anything from the file is called.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError


class UnsafePickleError(InputError):
    """A pickle asked for a global outside the allow-list."""


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as Python 3 uses it to write bytes in protocol 2 ('latin1' only)."""
    if str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return str(obj).encode("latin1", errors)


def _array_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {subtype!r}")
    return _numpy_multiarray()._reconstruct(subtype, shape, dtype)


def _array_scalar(dtype, data=None):
    return _numpy_multiarray().scalar(dtype, data) if data is not None else _numpy_multiarray().scalar(dtype)


def numpy_globals() -> dict[tuple[str, str], Any]:
    """What numpy arrays, dtypes and scalars unpickle through, under old and new module names."""
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _array_reconstruct
        table[(module, "scalar")] = _array_scalar
    return table


def builtin_globals(classes: tuple[type, ...]) -> dict[tuple[str, str], Any]:
    """set, bytes written by Python 3 in protocol 2, and copyreg's rebuild of plain objects
    (restricted to `classes`, themselves allowed globals)."""

    def reconstructor(cls, base, state):
        if cls not in classes or base is not object:
            raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r}")
        return copyreg._reconstructor(cls, base, state)

    table = {("_codecs", "encode"): _latin1_encode}
    for module in ("__builtin__", "builtins"):
        table[(module, "set")] = set
        table[(module, "frozenset")] = frozenset
        table[(module, "object")] = object
    for module in ("copy_reg", "copyreg"):
        table[(module, "_reconstructor")] = reconstructor
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals of `allowed` and refuses every other one."""

    def __init__(self, file, allowed: dict[tuple[str, str], Any], source: str, what: str):
        super().__init__(file, encoding="latin1")
        self.allowed = allowed
        self.source = source
        self.what = what

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{self.source}: refusing to load {module}.{name} from {self.what} "
                                    "(files of this kind never need it; the file may be malicious)") from None


def restricted_load(data: bytes, allowed: dict[tuple[str, str], Any], source: str | Path, what: str) -> Any:
    """Unpickle `data` with only the globals of `allowed`; any failure is a one-line InputError."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), allowed, str(source), what).load()
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise InputError(f"{source}: not readable as {what} ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------
# .npy files with pickled (object) payloads

NPY_ALLOWED: dict[tuple[str, str], Any] = {**numpy_globals(), **builtin_globals(())}


def read_npy(data: bytes, source: str | Path) -> Any:
    """Decode .npy bytes; an object payload goes through the allow-list (plain containers and
    numpy arrays only). A pickled dict comes back as the dict, not a 0-d object array."""
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(stream)
        else:  # 3.0 (utf-8 field names) has no public reader
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:
        raise InputError(f"{source}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if not dtype.hasobject:
        try:
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{source}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    value = restricted_load(data[stream.tell():], NPY_ALLOWED, source, "a pickled .npy file")
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    elif not isinstance(value, np.ndarray):
        raise InputError(f"{source}: not a readable .npy file (payload is a {type(value).__name__})")
    return value

