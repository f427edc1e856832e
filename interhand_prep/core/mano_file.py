"""Reading the official MANO pickles without chumpy.

The official MANO_RIGHT.pkl / MANO_LEFT.pkl are Python-2 pickles whose `shapedirs` is a chumpy
object and whose `J_regressor` is a scipy csc_matrix. chumpy cannot be installed on current Python
and numpy, so the unpickler maps the two chumpy classes and csc_matrix to inert stand-ins and
reads their arrays (`Select` over `Ch`; the compressed columns). Only the exact globals an
official file needs may be loaded from it (see `safe_pickle`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import safe_pickle
from .errors import InputError

MANO_DOWNLOAD_HINT = (
    "download the MANO model (Models & Code) from https://mano.is.tue.mpg.de under its licence "
    "and put MANO_RIGHT.pkl and MANO_LEFT.pkl into {dir} (or pass --mano-dir)"
)
_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
                  "hands_mean", "hands_components")


class _ChumpyStandIn:
    """Holds the pickled state of a chumpy object; `value()` evaluates the supported kinds."""

    kind = ""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TypeError(f"chumpy.{self.kind} state is a {type(state).__name__}")
        self.__dict__.update(state)

    def value(self) -> np.ndarray:
        if self.kind == "Ch":
            return np.asarray(self.__dict__["x"], dtype=np.float64)
        source = _as_array(self.__dict__["a"])  # Select: an index into another chumpy array
        return source.ravel()[np.asarray(self.__dict__["idxs"])].reshape(self.__dict__["preferred_shape"])


class ChumpyCh(_ChumpyStandIn):
    kind = "Ch"


class ChumpySelect(_ChumpyStandIn):
    kind = "Select"


class SparseColumns:
    """Stand-in for scipy.sparse's csc_matrix (the official J_regressor): its pickled state is
    data, indices, indptr and _shape; `toarray` builds the dense matrix with numpy. Reading it
    needs no scipy import, and no scipy object is built from a file's state."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise TypeError(f"csc_matrix state is a {type(state).__name__}")
        self.__dict__.update(state)

    def toarray(self) -> np.ndarray:
        data, indices, indptr = (np.asarray(self.__dict__[k]) for k in ("data", "indices", "indptr"))
        rows, cols = (int(n) for n in self.__dict__.get("_shape", self.__dict__.get("shape")))
        counts = np.diff(indptr)
        if len(counts) != cols or counts.min(initial=0) < 0 or len(data) != indptr[-1] or len(indices) != len(data):
            raise ValueError("inconsistent compressed-column arrays")
        dense = np.zeros((rows, cols), dtype=np.float64)
        np.add.at(dense, (indices, np.repeat(np.arange(cols), counts)), data)
        return dense


def _mano_globals() -> dict:
    table = {**safe_pickle.numpy_globals(), **safe_pickle.builtin_globals((ChumpyCh, ChumpySelect, SparseColumns))}
    table[("chumpy.ch", "Ch")] = ChumpyCh
    table[("chumpy.reordering", "Select")] = ChumpySelect
    for module in ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse"):  # old and new scipy paths
        table[(module, "csc_matrix")] = SparseColumns
    return table


def _as_array(value) -> np.ndarray:
    if isinstance(value, _ChumpyStandIn):
        return value.value()
    if isinstance(value, SparseColumns):  # the J_regressor
        return value.toarray()
    return np.asarray(value)


def read_model_bytes(data: bytes, path: Path) -> dict:
    """Decode a MANO pickle (official chumpy format or plain numpy) into a dict of arrays."""
    raw = safe_pickle.restricted_load(data, _mano_globals(), path, "a MANO model")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not a MANO model (a {type(raw).__name__}, expected a dict)")
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise InputError(f"{path}: not a MANO model (missing {', '.join(missing)})")
    try:
        return {k: (v if isinstance(v, str) else _as_array(v)) for k, v in raw.items()}
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        raise InputError(f"{path}: not a MANO model (unreadable chumpy array: {type(exc).__name__}: {exc})") from None


def read_file_bytes(path: Path) -> bytes:
    """The bytes of a MANO file, with a one-line InputError (and where to get the model) if absent."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: MANO model not found; " + MANO_DOWNLOAD_HINT.format(dir=path.parent)) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the MANO model ({exc.strerror})") from None


def read_model_file(path: str | Path) -> dict:
    path = Path(path)
    return read_model_bytes(read_file_bytes(path), path)
