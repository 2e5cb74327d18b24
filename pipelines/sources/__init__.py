"""Readers, one module per raw format, and the registry the prepare job looks them up in.

A reader is ``read(name, source: SourceConfig, ctx: ReadContext) -> Iterator[Item]``
(see ``pipelines.sources.items``). A new format plugs in by adding a module with
such a function and one line to ``READERS`` (and its name to
``pipelines.prepare_config.READER_NAMES``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext
from pipelines.sources.items import Item

Reader = Callable[[str, SourceConfig, ReadContext], Iterator[Item]]

READERS: dict[str, str] = {
    "posescript": "pipelines.sources.posescript:read",
    "spin": "pipelines.sources.spin_hmr:read_spin",
    "hmr2": "pipelines.sources.spin_hmr:read_hmr2",
    "llava": "pipelines.sources.llava_instruct:read",
    "spg": "pipelines.sources.spg:read",
    "rpe": "pipelines.sources.rpe:read",
    "image_folder": "pipelines.sources.image_folder:read",
}
"""Reader name (``sources.<name>.reader``) → ``module:function``, imported when used."""


def get_reader(name: str) -> Reader:
    if name not in READERS:
        raise KeyError(f"unknown reader {name!r} (known: {sorted(READERS)})")
    module, _, func = READERS[name].partition(":")
    return getattr(importlib.import_module(module), func)
