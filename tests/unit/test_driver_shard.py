"""`--shard I/N`: N parts that are disjoint, cover the matrix, come out the same from
the same inputs whatever their order, and carry about an even share of the cost."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtk.cli.main import run_cli
from dtk.driver.plan import Cell, ImageRef, Matrix
from dtk.driver.shard import CONTAINERFILE_COST, Shard, assign, keys_in, parse_shard, plan_json
from dtk.driver.sources import BrokenSource, ContainerfileSource, DkmsGroup, DkmsPackage
from dtk.errors import DtkError

TK = ImageRef("localhost/driver-toolkit:6.1.0-57-amd64", "sha256:aaa")

# Distinct names (a matrix's cells are distinct module@kernel), costs as source bytes.
_cells = st.dictionaries(st.text("abcdefgh@.-0123456789", min_size=1, max_size=12),
                         st.integers(0, 10_000_000), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_cells, st.integers(1, 12))
def test_shards_are_disjoint_and_cover_the_matrix(cells: dict[str, int], count: int) -> None:
    items = list(cells.items())
    shards = assign(items, count)
    assert len(shards) == len(items)  # every cell in exactly one shard
    assert all(1 <= s <= count for s in shards)
    parts = [[name for (name, _c), s in zip(items, shards, strict=True) if s == i]
             for i in range(1, count + 1)]
    assert sorted(n for part in parts for n in part) == sorted(cells)


@settings(max_examples=300, deadline=None)
@given(_cells, st.integers(1, 12), st.randoms(use_true_random=False))
def test_the_split_does_not_depend_on_the_order_cells_come_in(
        cells: dict[str, int], count: int, rnd: random.Random) -> None:
    items = list(cells.items())
    shuffled = items[:]
    rnd.shuffle(shuffled)
    first = dict(zip((n for n, _ in items), assign(items, count), strict=True))
    second = dict(zip((n for n, _ in shuffled), assign(shuffled, count), strict=True))
    assert first == second


@settings(max_examples=300, deadline=None)
@given(_cells, st.integers(1, 12))
def test_no_shard_carries_more_than_an_even_share_plus_one_cell(cells: dict[str, int],
                                                                count: int) -> None:
    """Graham's bound for list scheduling: the last cell placed on the fullest shard
    went to the least-loaded one, so that shard held at most the average before it."""
    items = list(cells.items())
    loads = [0] * count
    for (_name, cost), s in zip(items, assign(items, count), strict=True):
        loads[s - 1] += cost
    total = sum(cost for _n, cost in items)
    biggest = max((cost for _n, cost in items), default=0)
    assert max(loads) <= total / count + biggest
    if len(items) >= count and all(c > 0 for _n, c in items):
        assert min(loads) > 0  # no worker idles while another has two cells


def test_equal_cells_spread_round_robin() -> None:
    assert assign([(f"m{i}", 5) for i in range(6)], 3) == [1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2", ""])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(DtkError, match="is not I/N"):
        parse_shard(text)


def test_shard_is_read_with_spaces() -> None:
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)


def _matrix(tmp_path: Path) -> Matrix:
    cells = []
    for name, size in (("big", 9000), ("mid", 5000), ("small", 100)):
        tree = tmp_path / name
        tree.mkdir()
        (tree / "main.c").write_bytes(b"x" * size)
        group = DkmsGroup(name, (DkmsPackage(name, "1", tree, "sha256:" + name, (), "test"),))
        for kernel in ("6.1.0-57-amd64", "6.12.48+deb12-amd64"):
            cells.append(Cell(group, kernel, f"localhost/d/{name}:{kernel}", TK, TK, (),
                              f"sha256:{name}-{kernel}"))
    cells.append(Cell(ContainerfileSource("cf", tmp_path / "Containerfile", tmp_path, "sha256:c"),
                      "6.1.0-57-amd64", "localhost/d/cf:k", TK, None, (), "sha256:cf"))
    cells.append(Cell(BrokenSource("broken", "no dkms.conf"), "6.1.0-57-amd64",
                      "localhost/d/broken:k", None, None, (), "", error="no dkms.conf"))
    return Matrix(tuple(cells))


def test_a_worker_splits_before_it_has_toolkits_as_the_plan_does(tmp_path: Path) -> None:
    """keys_in (sources x kernels, before any toolkit) and the planned matrix's shards
    (plan_json, after) are the same split: disjoint parts covering the matrix."""
    matrix = _matrix(tmp_path)
    sources = list(dict.fromkeys(c.source for c in matrix.cells))
    kernels = ["6.1.0-57-amd64", "6.12.48+deb12-amd64"]
    whole = {f"{s.name}@{k}" for s in sources for k in kernels}
    parts = [keys_in(sources, kernels, Shard(i, 3)) for i in (1, 2, 3)]
    assert set.union(*parts) == whole and sum(map(len, parts)) == len(whole)
    planned = plan_json(Matrix(tuple(Cell(s, k, f"i/{s.name}:{k}", TK, TK, (), "h")
                                     for s in sources for k in kernels)), Shard(1, 3))
    for i, part in enumerate(parts, 1):
        assert part == {c["module"] + "@" + c["kernel"]
                        for c in planned["cells"] if c["shard"] == i}  # type: ignore[attr-defined]


def test_plan_json_names_each_cells_key_cost_and_shard(tmp_path: Path) -> None:
    plan = plan_json(_matrix(tmp_path), Shard(1, 2))
    rows = {c["module"] + "@" + c["kernel"]: c for c in plan["cells"]}  # type: ignore[attr-defined]
    assert rows["big@6.1.0-57-amd64"]["key"] == "sha256:big-6.1.0-57-amd64"
    assert rows["big@6.1.0-57-amd64"]["cost"] == 9000
    assert rows["cf@6.1.0-57-amd64"]["cost"] == CONTAINERFILE_COST
    assert rows["broken@6.1.0-57-amd64"]["cost"] == 0
    # the Containerfile guess is the largest: it goes first, alone on shard 1
    assert rows["cf@6.1.0-57-amd64"]["shard"] == 1
    assert plan["loads"] == [CONTAINERFILE_COST, 2 * (9000 + 5000 + 100)]


@pytest.mark.parametrize("command", [["build"], ["prove"], ["module", "build"]])
def test_builds_refuse_a_bad_shard_before_any_work(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    code = run_cli([*command, "-f", str(tmp_path / "Containerfile"), "--kernel",
                    "6.1.0-57-amd64", "--shard", "3/2", "--json"])
    assert code == 2
    assert "--shard '3/2' is not I/N" in capsys.readouterr().out
