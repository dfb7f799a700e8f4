"""`dtk report merge`: shards back into the whole matrix's result, or a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from dtk.driver.merge import merge_builds, outcome_from_json
from dtk.driver.outcome import Outcome, Status
from dtk.driver.remotecache import check_repo
from dtk.errors import DtkError

CELLS = ["a@k1", "a@k2", "b@k1", "b@k2"]


def _outcome(key: str, status: Status = Status.BUILT) -> dict[str, Any]:
    module, kernel = key.split("@")
    return Outcome(module, kernel, status, f"r/{module}:{kernel}", reason="why",
                   tail=("x",)).to_json()


def _shard(shard: str, keys: list[str], cells: list[str] = CELLS) -> dict[str, Any]:
    return {"outcomes": [_outcome(k) for k in keys], "log_dir": f"/logs/{shard}",
            "wall_seconds": 3.0, "matrix": {"cells": cells, "shard": shard}}


def test_shards_merge_into_the_matrix_order() -> None:
    merged = merge_builds([_shard("2/2", ["b@k2", "a@k2"]), _shard("1/2", ["a@k1", "b@k1"])])
    assert [f"{o['module']}@{o['kernel']}" for o in merged["outcomes"]] == CELLS
    assert merged["matrix"] == {"cells": CELLS, "shard": "1/1"}
    assert merged["outcomes"][0] == _outcome("a@k1")


@pytest.mark.parametrize(("inputs", "message"), [
    ([_shard("1/2", ["a@k1", "b@k1"])], "not each of 1..2 once"),
    ([_shard("1/2", ["a@k1"]), _shard("1/2", ["b@k1"])], "not each of 1..2 once"),
    ([_shard("1/2", ["a@k1", "b@k1"]), _shard("2/2", ["a@k2"])], "no result for b@k2"),
    ([_shard("1/2", ["a@k1", "b@k1"]), _shard("2/2", ["a@k2", "b@k2", "a@k1"])],
     "a@k1 is reported by two inputs"),
    ([_shard("1/2", ["a@k1"]), _shard("2/2", ["a@k2"], ["a@k1", "a@k2"])],
     "different matrices"),
    ([{"outcomes": []}], "does not say which matrix"),
    ([], "nothing to merge"),
])
def test_what_does_not_add_up_is_refused(inputs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(DtkError, match=message):
        merge_builds(inputs)


def test_an_outcome_survives_its_json() -> None:
    original = Outcome("m", "k", Status.FAILED, "r/m:k", reason="r", tail=("a", "b"),
                       notes=("n",), seconds=1.5)
    assert outcome_from_json(original.to_json()) == original


@pytest.mark.parametrize("repo", ["cache", "localhost/cache", "127.0.0.1:5000",
                                  "127.0.0.1:5000/c:tag", "127.0.0.1:5000/c@sha256:00"])
def test_a_cache_must_be_a_registry_repository(repo: str) -> None:
    with pytest.raises(DtkError, match="is not REGISTRY/REPOSITORY"):
        check_repo(repo)
    assert check_repo("docker://127.0.0.1:5000/team/cache") == "127.0.0.1:5000/team/cache"
