"""The `--json` of every `dtk module build --shard I/N` run back into one result: what
one machine building the Module's whole plan would have printed. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dtk.driver.merge import input_names, order_cells
from dtk.errors import DtkError


def merge_module_builds(inputs: Sequence[Mapping[str, Any]],
                        names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every shard's `dtk module build --json` → one of the whole plan (its kernels in
    the plan's order); refused unless the inputs are the N shards of one Module's."""
    called = input_names(inputs, names)
    modules = {(str(d.get("namespace")), str(d.get("module"))) for d in inputs}
    if len(modules) > 1:
        listed = ", ".join(f"{ns}/{mod} ({n})" for n, (ns, mod) in zip(
            called, ((str(d.get("namespace")), str(d.get("module"))) for d in inputs),
            strict=True))
        raise DtkError(f"the inputs built different Modules: {listed}",
                       hint="merge only the shards of one Module's build")
    kernels, results = order_cells(inputs, lambda d: list(d.get("results", [])),
                                   lambda r: str(r["kernel"]), names)
    first = inputs[0]
    return {"module": first.get("module"), "namespace": first.get("namespace"),
            "results": results, "unmatched": list(first.get("unmatched", [])),
            "log_dirs": [str(d.get("log_dir", "")) for d in inputs],
            "wall_seconds": max(float(d.get("wall_seconds", 0)) for d in inputs),
            "matrix": {"cells": kernels, "shard": "1/1"}}
