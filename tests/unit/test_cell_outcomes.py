"""How a cell's outcome reads (the tour's wording items): a cache hit that fails to
push is no cached failure, a push names its destination once, and a hit in local
storage reads otherwise than one taken from the registry cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dtk.cli.driver import print_outcomes
from dtk.driver import matrix
from dtk.driver.matrix import RunOptions, describe
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import Cell, ImageRef
from dtk.driver.sources import DkmsGroup, DkmsPackage

TK = ImageRef("localhost/driver-toolkit:6.1.0-57-amd64", "sha256:aaa")
# Nothing listens on port 9 (discard) here, and the image is in no storage: skopeo
# (the real one) refuses the push at once, which is all this test needs.
IMAGE = "127.0.0.1:9/dtk-test/never-built:6.1.0-57-amd64"


def _cell(tmp_path: Path) -> Cell:
    pkg = DkmsPackage("hello", "1", tmp_path, "sha256:1", (), "test")
    return Cell(DkmsGroup("hello", (pkg,)), "6.1.0-57-amd64", IMAGE, TK, TK, (),
                "sha256:hello", push=True)


def test_a_cache_hit_that_fails_to_push(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    hit = Outcome("hello", "6.1.0-57-amd64", Status.BUILT, IMAGE, cached=True, shared=True)
    pushed = matrix._push(_cell(tmp_path), hit, RunOptions(1, tmp_path))
    print_outcomes([pushed], tmp_path, 1.0)
    table = capsys.readouterr().out
    assert "failed (cached)" not in table and "failed (registry cache)" not in table
    assert pushed.status is Status.FAILED and not pushed.cached
    assert pushed.reason.startswith(f"cache hit, but pushing {IMAGE} failed")
    assert f"to {IMAGE}" not in pushed.reason  # not "pushing X to X"
    assert pushed.retry  # the push failed, not the cell: another run may push it


def test_where_a_result_not_made_now_came_from() -> None:
    built = Outcome("hello", "k", Status.BUILT, "r/hello:k", seconds=3.0)
    here = replace(built, cached=True)
    shared = replace(here, shared=True)
    assert describe(built) == "built in 3.0s"
    assert describe(here) != describe(shared)
    assert "local" in describe(here) and "registry cache" in describe(shared)
    failure = Outcome("hello", "k", Status.FAILED, "r/hello:k", cached=True, reason="boom")
    assert describe(failure) == "failed (remembered): boom"
    assert replace(failure, shared=True).state == "failed (registry cache)"
