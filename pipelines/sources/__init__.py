"""Readers, one module per raw format, and the registry the prepare job looks them up in.

A reader is ``read(name, source: SourceConfig, ctx: ReadContext, part=None) -> Iterator[Item]``
(see ``pipelines.sources.items``): with ``part=None`` it reads the whole source, with
one of the parts its planner made it reads that part only. The prepare job plans on
the driver (``plan_source``: cheap, it lists files and reads npz headers) and runs
each part as its own Ray Data read task. Parts are:

- npz files (spin, hmr2): row ranges of each file, ``{"file", "split", "rows"}``;
- tar shards (hmr2_tar): one shard each, ``{"file"}``;
- sources indexed by JSON files or a folder listing (posescript, posefix, spg, rpe, llava,
  image_folder): ``{"stride": k, "offset": j}``, every k-th entry, so each task parses
  the index itself and no driver ever holds it; the part with offset 0 also reports
  what concerns the whole source.

A new format plugs in by adding a module with such a function, one line to
``READERS`` (and to ``PLANNERS`` if it plans by file), and its name to
``pipelines.prepare_config.READER_NAMES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.prepare_config import SourceConfig
from pipelines.sources.inputs import ReadContext
from pipelines.sources.items import Item

Reader = Callable[..., Iterator[Item]]

READERS: dict[str, str] = {
    "posescript": "pipelines.sources.posescript:read",
    "posefix": "pipelines.sources.posefix:read",
    "spin": "pipelines.sources.spin_hmr:read_spin",
    "hmr2": "pipelines.sources.spin_hmr:read_hmr2",
    "hmr2_tar": "pipelines.sources.hmr2_tar:read",
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


def plan_source(
    name: str, source: SourceConfig, ctx: ReadContext, rows_per_part: int, stride: int
) -> list[dict[str, Any]]:
    """The parts one source is read in (see the module docstring); at least one."""
    if source.reader in ("spin", "hmr2"):
        from pipelines.sources.spin_hmr import plan

        parts = plan(name, source, ctx, rows_per_part)
    elif source.reader == "hmr2_tar":
        from pipelines.sources.hmr2_tar import plan as plan_tar

        parts = plan_tar(name, source, ctx)
    else:
        parts = [{"stride": stride, "offset": k} for k in range(stride)]
    return parts
