"""Split one build matrix over N workers: `--shard I/N`.

Every worker computes the same split from the same inputs, without talking to the
others: the partition depends only on each cell's name (module@kernel) and dtk's
cost estimate (the bytes of its DKMS sources, a fixed guess for a Containerfile),
never on the order dicts iterate in, a host name, the time or which toolkits this
machine has (a shard makes only its own kernels' toolkits). Cells go costliest
first to the least-loaded shard (Graham's LPT rule), so no shard's load exceeds an
even share by more than one cell's cost.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dtk.driver.matrix import source_bytes
from dtk.driver.plan import Cell, Matrix
from dtk.driver.sources import BrokenSource, ContainerfileSource, DkmsGroup, Source
from dtk.errors import DtkError

# A Containerfile's build cannot be sized from its files (it may download or
# compile anything): it counts as a mid-sized DKMS package (about 1 MiB of source;
# Debian's *-dkms packages range from a few KiB to a few MiB).
CONTAINERFILE_COST = 1 << 20


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'I/N' with 1 <= I <= N, as CI systems number their jobs (Kubernetes' index
    starts at 0: the rendered Job adds one)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise DtkError(f"--shard '{text}' is not I/N with 1 <= I <= N",
                       hint="e.g. --shard 1/4 for the first of four workers")
    return Shard(int(match[1]), int(match[2]))


def source_cost(source: Source, sizes: Callable[[Path], int] = source_bytes) -> int:
    """What a source's cell is expected to cost, in bytes of source, whatever the
    kernel: a source that cannot be read costs nothing (its cells fail at once) but
    each of its cells still lands in exactly one shard. Nothing this machine's
    toolkits say enters it, so a worker can split before it has any."""
    if isinstance(source, BrokenSource):
        return 0
    if isinstance(source, DkmsGroup):
        return sum(sizes(p.tree) for p in source.packages)
    assert isinstance(source, ContainerfileSource)
    return CONTAINERFILE_COST


def assign(costs: Sequence[tuple[str, int]], count: int) -> list[int]:
    """The shard (1-based) of each (name, cost), in the input's order.

    Costliest first, ties broken by name then by position (so that equal inputs
    give equal answers); each goes to the least-loaded shard, ties to the lowest
    number."""
    if count < 1:
        raise ValueError("count must be at least 1")
    order = sorted(range(len(costs)), key=lambda i: (-costs[i][1], costs[i][0], i))
    loads = [0] * count
    out = [0] * len(costs)
    for i in order:
        target = min(range(count), key=lambda s: (loads[s], s))
        loads[target] += costs[i][1]
        out[i] = target + 1
    return out


def keys_in(sources: Sequence[Source], kernels: Sequence[str], shard: Shard) -> set[str]:
    """The cells (module@kernel) of one shard of the matrix sources x kernels."""
    sizes = functools.cache(source_bytes)  # a package's tree serves every kernel
    cells = [(f"{s.name}@{k}", source_cost(s, sizes)) for s in sources for k in kernels]
    return {key for (key, _cost), index in zip(cells, assign(cells, shard.count), strict=True)
            if index == shard.index}


def shards_of(matrix: Matrix, count: int) -> list[tuple[Cell, int, int]]:
    """(cell, its shard, its cost) for every cell of the matrix, in the plan's order."""
    sizes = functools.cache(source_bytes)
    costs = [(cell.key, source_cost(cell.source, sizes)) for cell in matrix.cells]
    return [(cell, shard, cost) for cell, shard, (_key, cost)
            in zip(matrix.cells, assign(costs, count), costs, strict=True)]


def plan_json(matrix: Matrix, shard: Shard | None) -> dict[str, object]:
    """What `--plan --json` prints: every cell, its key (input hash) and its shard."""
    count = shard.count if shard else 1
    rows = shards_of(matrix, count)
    loads = [sum(cost for _c, s, cost in rows if s == i) for i in range(1, count + 1)]
    return {"shards": count, "shard": str(shard) if shard else None, "loads": loads,
            "cells": [{"module": c.module, "kernel": c.kernel, "image": c.image,
                       "key": c.input_hash, "error": c.error, "cost": cost, "shard": s}
                      for c, s, cost in rows]}
