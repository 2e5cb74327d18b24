"""Unpickling numpy data from untrusted files without ever running their code.

HMR 2.0 stores per-sample annotations as pickles (``data.pyd`` members of its
webdataset tar shards) and some of its npz files hold object arrays
(``extra_info``), which ``np.load(allow_pickle=True)`` would unpickle with full
power: a crafted file could run any callable. ``restricted_loads`` resolves only
the globals that numpy arrays, dtypes and scalars and plain containers need;
any other global (``os.system``, ``builtins.eval``, ...) raises ``UnsafePickleError``
before anything is called, naming the global.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    # Protocol-2 pickles (Python 2 era files) spell bytes as _codecs.encode(text, "latin1").
    ("_codecs", "encode"): __import__("codecs").encode,
}
"""(module, name) → object: the only globals a pickle may refer to."""

_RENAMED_MODULES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core": "numpy._core"}
"""Pickles written under numpy 1.x name ``numpy.core``; numpy 2 moved it to ``numpy._core``."""


class UnsafePickleError(ValueError):
    """A pickle refers to a global outside the allowed set (nothing of it was executed)."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        key = (_RENAMED_MODULES.get(module, module), name)
        if key not in _ALLOWED:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not allowed "
                "(only numpy arrays, dtypes, scalars and plain containers are read)"
            )
        return _ALLOWED[key]


def restricted_load(stream: io.BufferedIOBase | Any) -> Any:
    """One object from a binary stream, through ``RestrictedUnpickler``."""
    return RestrictedUnpickler(stream).load()


def restricted_loads(data: bytes) -> Any:
    return restricted_load(io.BytesIO(data))
