"""How a build matrix is scheduled: costliest cells first, make's -j shared among
the cells that run beside each other, outcomes in the plan's order."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.driver import matrix
from dtk.driver.matrix import RunOptions, estimated_cost, make_jobs, run_matrix
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import Cell, ImageRef, Matrix
from dtk.driver.sources import ContainerfileSource, DkmsGroup, DkmsPackage
from dtk.progress import NullMonitor

TK = ImageRef("localhost/driver-toolkit:6.1.0-57-amd64", "sha256:aaa")


def _dkms_cell(tmp_path: Path, name: str, size: int) -> Cell:
    tree = tmp_path / name
    tree.mkdir()
    (tree / "main.c").write_bytes(b"x" * size)
    pkg = DkmsPackage(name, "1", tree, "sha256:" + name, (), "test")
    return Cell(DkmsGroup(name, (pkg,)), "6.1.0-57-amd64", f"localhost/d/{name}:k", TK, TK,
                (), "sha256:" + name)


@pytest.mark.parametrize(("cores", "workers", "unfinished", "expected"), [
    (2, 2, 12, 1),   # two cells fill two cores: one make job each
    (2, 2, 1, 2),    # the last cell gets both cores
    (4, 2, 12, 2),
    (2, 1, 12, 2),   # -j 1 on the command line: one cell, every core
    (1, 4, 12, 1),
    (8, 3, 2, 4),
])
def test_make_jobs_share_the_cores(cores: int, workers: int, unfinished: int,
                                   expected: int) -> None:
    assert make_jobs(cores, workers, unfinished) == expected


def test_containerfile_cells_go_first_then_the_largest_sources(tmp_path: Path) -> None:
    small, big = _dkms_cell(tmp_path, "small", 10), _dkms_cell(tmp_path, "big", 10_000)
    cf = Cell(ContainerfileSource("cf", tmp_path / "Containerfile", tmp_path, "sha256:c"),
              "6.1.0-57-amd64", "localhost/d/cf:k", TK, None, (), "sha256:cf")
    assert sorted([small, cf, big], key=lambda c: -estimated_cost(c)) == [cf, big, small]


def _recorder(monkeypatch: pytest.MonkeyPatch, cached: set[str]) -> list[tuple[str, int]]:
    """settle_cell and build_cell replaced by recorders: these tests are of the
    scheduler alone (the integration tests build real cells)."""
    started: list[tuple[str, int]] = []

    def settle(cell: Cell, _options: RunOptions) -> Outcome | None:
        return Outcome(cell.module, cell.kernel, Status.BUILT, cell.image, cached=True) \
            if cell.module in cached else None

    def build(cell: Cell, _options: RunOptions, _on_line: object = None, *,
              make_jobs: int = 1) -> Outcome:
        started.append((cell.module, make_jobs))
        return Outcome(cell.module, cell.kernel, Status.BUILT, cell.image)

    monkeypatch.setattr(matrix, "settle_cell", settle)
    monkeypatch.setattr(matrix, "build_cell", build)
    monkeypatch.setattr("dtk.driver.matrix.os.cpu_count", lambda: 2)
    return started


def test_cells_run_costliest_first_and_report_in_plan_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cells = [_dkms_cell(tmp_path, n, s) for n, s in
             (("a", 10), ("b", 3000), ("hit", 99_999), ("c", 200))]
    started = _recorder(monkeypatch, cached={"hit"})
    outcomes = run_matrix(Matrix(tuple(cells)), RunOptions(1, tmp_path / "logs"), NullMonitor())
    assert [o.module for o in outcomes] == ["a", "b", "hit", "c"]
    assert [o.cached for o in outcomes] == [False, False, True, False]
    # One worker: every cell may use both cores; the cache hit compiles nothing.
    assert started == [("b", 2), ("c", 2), ("a", 2)]


def test_a_lone_build_among_cache_hits_gets_every_core(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cells = [_dkms_cell(tmp_path, n, 10) for n in ("one", "two", "three", "four")]
    started = _recorder(monkeypatch, cached={"one", "three", "four"})
    run_matrix(Matrix(tuple(cells)), RunOptions(2, tmp_path / "logs"), NullMonitor())
    assert started == [("two", 2)]


def test_cells_filling_the_cores_get_one_make_job_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cells = [_dkms_cell(tmp_path, n, 10) for n in ("one", "two", "three")]
    started = _recorder(monkeypatch, cached=set())
    run_matrix(Matrix(tuple(cells)), RunOptions(2, tmp_path / "logs"), NullMonitor())
    jobs = dict(started)
    assert sorted(jobs) == ["one", "three", "two"]
    assert list(jobs.values()).count(1) >= 2  # the two that started beside each other
