"""Read official SMPL ``.pkl`` files without chumpy.

The official files were pickled under Python 2 with chumpy arrays (``chumpy.ch.Ch``,
sometimes ``chumpy.reordering.Select``) and scipy sparse matrices. chumpy neither
installs nor imports on Python 3.11, and a plain ``pickle.load`` would run whatever
a file names. ``load_smpl_pickle`` uses a restricted unpickler instead: chumpy
classes become a small record of their pickled state (turned into numpy arrays
afterwards), scipy sparse matrices become a record of their arrays (turned into
dense arrays), numpy's own reconstruction functions are allowed, and every other
global is refused with an error naming the file and the class.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import copyreg
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse


class RefusedPickleClass(ValueError):
    """The pickle names a global outside the allowed set."""


class _PickledState:
    """Base for stand-ins: keeps whatever state the pickle restores."""

    source_module = ""
    source_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        # ``(dict_state, slot_state)`` for classes with __slots__; a dict otherwise.
        merged: dict[str, Any] = {}
        parts = state if isinstance(state, tuple) else (state,)
        for part in parts:
            if isinstance(part, dict):
                merged.update(part)
        self._state = merged

    @property
    def qualname(self) -> str:
        return f"{self.source_module}.{self.source_name}"


class _ChumpyObject(_PickledState):
    """A chumpy array as pickled: ``x`` for plain ``Ch``, ``a``/``idxs`` for ``Select``."""


class _SparseMatrix(_PickledState):
    """A scipy sparse matrix as pickled (``data``, ``indices``, ``indptr``, ``_shape``...)."""


_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}

_ALLOWED: dict[tuple[str, str], Any] = {
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
    ("builtins", "object"): object,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    # Protocol 0/1 pickles written by Python 3 store bytes through this.
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
    _ALLOWED[(_mod, "scalar")] = np._core.multiarray.scalar  # type: ignore[attr-defined]
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = np._core.numeric._frombuffer  # type: ignore[attr-defined]


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path
        self._standins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__``, ``copy_reg``): the base class maps them
        # only inside its own find_class, which this one replaces.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return self._standin(_ChumpyObject, module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            return self._standin(_SparseMatrix, module, name)
        raise RefusedPickleClass(
            f"{self.path}: refusing to unpickle {module}.{name}; an SMPL model file holds only "
            "numpy arrays, chumpy arrays and scipy sparse matrices"
        )

    def _standin(self, base: type, module: str, name: str) -> type:
        # One subclass per pickled class, so the conversion knows what it was.
        key = (module, name)
        if key not in self._standins:
            self._standins[key] = type(name, (base,), {"source_module": module, "source_name": name})
        return self._standins[key]


def _chumpy_value(obj: _ChumpyObject, where: str) -> np.ndarray:
    state = obj._state
    if "x" in state:
        return np.asarray(_plain(state["x"], where))
    if obj.source_name == "Select" and "a" in state and "idxs" in state:
        # chumpy.reordering.Select: a.r.ravel()[idxs], reshaped to preferred_shape.
        values = np.asarray(_plain(state["a"], where)).ravel()[np.asarray(_plain(state["idxs"], where))]
        shape = state.get("preferred_shape")
        return values.reshape(shape) if shape is not None else values
    if obj.source_name == "Reshape" and "a" in state and "sh" in state:
        return np.asarray(_plain(state["a"], where)).reshape(state["sh"])
    raise ValueError(
        f"{where}: chumpy object {obj.qualname} holds no array value "
        f"(state keys {sorted(state)}); only Ch, Select and Reshape objects can be read without chumpy"
    )


def _sparse_value(obj: _SparseMatrix, where: str) -> np.ndarray:
    state = obj._state
    shape = state.get("_shape", state.get("shape"))
    fmt = state.get("format") or obj.source_name.split("_")[0]
    try:
        if fmt in ("csc", "csr"):
            cls = scipy.sparse.csc_matrix if fmt == "csc" else scipy.sparse.csr_matrix
            mat = cls((state["data"], state["indices"], state["indptr"]), shape=shape)
        elif fmt == "coo":
            coords = state.get("coords") or (state["row"], state["col"])
            mat = scipy.sparse.coo_matrix((state["data"], tuple(coords)), shape=shape)
        else:
            raise ValueError(f"sparse format {fmt!r}")
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{where}: cannot rebuild sparse matrix {obj.qualname}: {exc}") from exc
    return np.asarray(mat.toarray())


def _plain(value: Any, where: str) -> Any:
    """Replace stand-ins by numpy arrays, recursively."""
    if isinstance(value, _ChumpyObject):
        return _chumpy_value(value, where)
    if isinstance(value, _SparseMatrix):
        return _sparse_value(value, where)
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v, where) for v in value)
    return value


def load_smpl_pickle(path: str | Path) -> dict[str, Any]:
    """The dict of an SMPL ``.pkl`` file with chumpy and sparse values turned into numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMPL model file {path} does not exist")
    try:
        with path.open("rb") as f:
            data = _RestrictedUnpickler(f, path).load()
    except RefusedPickleClass:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise ValueError(f"{path}: not a readable SMPL pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an SMPL pickle holds a dict, got {type(data).__name__}")
    return {str(k): _plain(v, f"{path}:{k}") for k, v in data.items()}
