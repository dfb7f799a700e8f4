"""`dtk prove --shard I/N` outputs back into one proof: the matrix, the terminal
text and the HTML page one machine proving the whole matrix would make. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dtk.driver.merge import order_cells
from dtk.errors import DtkError
from dtk.prove.model import Build, CellResult, ModuleProof, ProveCell, ProveResult


def cell_from_json(data: Mapping[str, Any]) -> CellResult:
    """A cell as `CellResult.to_json` wrote it (what the text and the page need)."""
    try:
        cell = ProveCell(str(data["row"]), str(data["kernel"]), str(data["image"]),
                         Build(data["build"]), str(data["image_id"]),
                         str(data["build_reason"]), tuple(data["build_tail"]),
                         str(data["build_log"]), str(data["built_for"]))
        return CellResult(cell, [ModuleProof.from_json(dict(m)) for m in data["modules"]],
                          str(data["problem"]), bool(data["cached"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise DtkError(f"a cell in the input is not dtk prove's: {exc}") from None


def merge_proofs(inputs: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
                 ) -> tuple[ProveResult, list[str]]:
    """Every shard's `dtk prove --json` → the whole proof, and the matrix's cells.

    Each shard boots the kernels of its own cells; a kernel's boots are counted as
    its busiest shard's (the one boot a single machine makes, plus the reboots after
    a crash), so that the summary reads as one machine's would."""
    cells, ordered = order_cells(inputs, lambda d: list(d.get("cells", [])),
                                 lambda c: f"{c['row']}@{c['kernel']}", names)
    results = [cell_from_json(c) for c in ordered]
    boots: dict[str, int] = {}
    for data in inputs:
        for kernel, count in dict(data.get("boots", {})).items():
            boots[kernel] = max(boots.get(kernel, 0), int(count))
    rows = list(dict.fromkeys(r.cell.row for r in results))
    kernels = list(dict.fromkeys(r.cell.kernel for r in results))
    seconds = max(float(d.get("seconds", 0)) for d in inputs)
    return ProveResult(rows, kernels, results, boots, seconds), cells
