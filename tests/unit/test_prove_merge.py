"""`dtk report merge` of `dtk prove --shard` outputs: the whole proof's JSON, text
and page, as one machine proving the whole matrix makes them."""

from __future__ import annotations

from typing import Any

from dtk.driver.shard import assign
from dtk.prove.html import render_html
from dtk.prove.merge import merge_proofs
from dtk.prove.model import ProveResult
from dtk.prove.report import render_text
from tests.unit.prove_support import synthetic


def _shards(whole: ProveResult, count: int) -> list[dict[str, Any]]:
    """What each shard's `dtk prove --json` holds: its own cells, rows and kernels."""
    keys = [c.cell.key for c in whole.cells]
    parts = assign([(k, len(k)) for k in keys], count)
    out = []
    for index in range(1, count + 1):
        mine = [c for c, p in zip(whole.cells, parts, strict=True) if p == index]
        part = ProveResult(list(dict.fromkeys(c.cell.row for c in mine)),
                           list(dict.fromkeys(c.cell.kernel for c in mine)), mine,
                           dict.fromkeys({c.cell.kernel for c in mine}, 1), whole.seconds)
        data = part.to_json()
        data["matrix"] = {"cells": keys, "shard": f"{index}/{count}"}
        out.append(data)
    return out


def test_merged_shards_are_the_whole_proof() -> None:
    whole = synthetic(7, 5)
    shards = _shards(whole, 3)
    merged, cells = merge_proofs(list(reversed(shards)))
    assert cells == [c.cell.key for c in whole.cells]
    assert merged.to_json() == whole.to_json()
    assert render_text(merged) == render_text(whole)
    assert render_html(merged.to_json()) == render_html(whole.to_json())
