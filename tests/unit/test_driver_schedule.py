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


def test_cells_run_costliest_first_and_report_in_plan_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_cell is replaced by a recorder: this tests the scheduler alone (the real
    cells are built by the integration tests)."""
    cells = [_dkms_cell(tmp_path, n, s) for n, s in (("a", 10), ("b", 3000), ("c", 200))]
    started: list[tuple[str, int]] = []

    def fake_run_cell(cell: Cell, _options: RunOptions, _on_line: object = None, *,
                      make_jobs: int = 1) -> Outcome:
        started.append((cell.module, make_jobs))
        return Outcome(cell.module, cell.kernel, Status.BUILT, cell.image)

    monkeypatch.setattr(matrix, "run_cell", fake_run_cell)
    monkeypatch.setattr("dtk.driver.matrix.os.cpu_count", lambda: 2)
    outcomes = run_matrix(Matrix(tuple(cells)), RunOptions(1, tmp_path / "logs"), NullMonitor())
    assert [o.module for o in outcomes] == ["a", "b", "c"]
    # One worker: every cell may use both cores.
    assert started == [("b", 2), ("c", 2), ("a", 2)]
