"""N shards' JSON back into one result: what one machine running the whole matrix
would have printed, cell for cell. Pure.

Each shard's output names the whole matrix in the plan's order and which shard it
ran (`"matrix": {"cells": [...], "shard": "I/N"}`); the merge refuses outputs of
different matrices, a shard given twice or missing, and a cell reported twice or
by nobody, rather than print a result that only looks whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dtk.driver.outcome import Outcome, Status
from dtk.driver.shard import Shard, parse_shard
from dtk.errors import DtkError

Json = dict[str, Any]


def _matrix_of(name: str, data: Mapping[str, Any]) -> tuple[list[str], Shard]:
    matrix = data.get("matrix")
    if not isinstance(matrix, dict) or not isinstance(matrix.get("cells"), list):
        raise DtkError(f"{name} does not say which matrix it ran",
                       hint="merge the --json output of `dtk build`, `dtk module build` or "
                            "`dtk prove` (with -f/--dkms) runs, one per shard")
    try:
        shard = parse_shard(str(matrix.get("shard", "")))
    except DtkError:
        raise DtkError(f"{name} names no shard I/N") from None
    return [str(c) for c in matrix["cells"]], shard


def input_names(inputs: Sequence[object], names: Sequence[str] | None) -> list[str]:
    """What the errors call each input: its file, else its place."""
    return list(names) if names else [f"input {i + 1}" for i in range(len(inputs))]


def order_cells(inputs: Sequence[Mapping[str, Any]], items: Callable[[Mapping[str, Any]],
                list[Json]], key: Callable[[Json], str], names: Sequence[str] | None = None
                ) -> tuple[list[str], list[Json]]:
    """The whole matrix, and every shard's items (`items(data)`, named by `key`) in
    the matrix's order; refused unless the inputs are exactly the N shards of one
    matrix and every cell is reported once. `names`: the inputs' files, for errors."""
    if not inputs:
        raise DtkError("nothing to merge", hint="pass the JSON file of every shard")
    called = input_names(inputs, names)
    matrices = [_matrix_of(n, d) for n, d in zip(called, inputs, strict=True)]
    cells = matrices[0][0]
    if any(m != cells for m, _ in matrices):
        raise DtkError("the inputs ran different matrices (other sources, kernels or "
                       "options)", hint="merge only the shards of one command line")
    count = matrices[0][1].count
    seen = sorted(s.index for _, s in matrices)
    if any(s.count != count for _, s in matrices) or seen != list(range(1, count + 1)):
        given = ", ".join(f"{s} ({n})" for n, (_, s) in zip(called, matrices, strict=True))
        raise DtkError(f"the inputs are shards {given}, not each of 1..{count} once",
                       hint=f"pass one output for each of the {count} shards")
    found: dict[str, Json] = {}
    by: dict[str, str] = {}
    for input_name, data in zip(called, inputs, strict=True):
        for item in items(data):
            name = key(item)
            if name in found:
                raise DtkError(f"{name} is reported by two inputs: {by[name]} and "
                               f"{input_name}")
            found[name], by[name] = item, input_name
    missing = [c for c in cells if c not in found]
    extra = [n for n in found if n not in cells]
    if missing or extra:
        raise DtkError("the shards do not add up to the matrix: "
                       + (f"no result for {', '.join(missing[:5])}" if missing else "")
                       + ("; " if missing and extra else "")
                       + (f"{', '.join(extra[:5])} not in it" if extra else ""))
    return cells, [found[c] for c in cells]


def merge_builds(inputs: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
                 ) -> Json:
    """`dtk build --json` of every shard → one `dtk build --json` of the whole matrix."""
    cells, outcomes = order_cells(inputs, lambda d: list(d.get("outcomes", [])),
                                  lambda o: f"{o['module']}@{o['kernel']}", names)
    return {"outcomes": outcomes,
            "log_dirs": [str(d.get("log_dir", "")) for d in inputs],
            "wall_seconds": max(float(d.get("wall_seconds", 0)) for d in inputs),
            "matrix": {"cells": cells, "shard": "1/1"}}


def outcome_from_json(data: Mapping[str, Any]) -> Outcome:
    """An Outcome as `Outcome.to_json` wrote it."""
    try:
        return Outcome(str(data["module"]), str(data["kernel"]), Status(data["status"]),
                       str(data["image"]), str(data.get("image_id", "")),
                       bool(data.get("cached")), tuple(data.get("modules", ())),
                       str(data.get("reason", "")), tuple(data.get("tail", ())),
                       str(data.get("log", "")), str(data.get("pushed", "")),
                       float(data.get("seconds", 0)), tuple(data.get("notes", ())),
                       bool(data.get("shared")), bool(data.get("retry")))
    except (KeyError, ValueError, TypeError) as exc:
        raise DtkError(f"an outcome in the input is not dtk's: {exc}") from None
