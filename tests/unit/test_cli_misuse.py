"""Input the way a careful CLI handles it (issue 17 §3): tag-form kernels get "did you
mean" in build and module plan as in check; options of another subcommand are an
error; a kernel no mapping matches is a row (exit 1 with --strict). No tool runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.kmm_support import dtk, minimal, write

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/dtk-example/Containerfile"


def test_build_takes_no_tag_form_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "build", "-f", str(EXAMPLE), "--kernel",
                     "6.12.118_deb12-amd64", "--dry-run")
    assert code == 2 and "did you mean 6.12.118+deb12-amd64?" in text, text


def test_module_plan_takes_no_tag_form_kernel(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(write(tmp_path, minimal())),
                     "--kernel", "6.12.118_deb12-amd64", "--no-state")
    assert code == 2 and "did you mean 6.12.118+deb12-amd64?" in text, text


def test_options_of_build_before_a_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "build", "-f", str(EXAMPLE), "prune", "--dry-run")
    assert code == 2, text
    assert text.startswith("error: --file belongs to `dtk build`, not to `dtk build prune`")


def test_a_kernel_no_mapping_matches_is_a_row(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    files = str(write(tmp_path, minimal()))
    args = ("module", "plan", "-f", files, "--kernel", "6.1.0-56-amd64", "--kernel",
            "6.1.0-56-arm64", "--no-state")
    code, text = dtk(monkeypatch, *args)
    assert code == 0, text
    row = next(line for line in text.splitlines() if line.startswith("6.1.0-56-arm64"))
    assert "no mapping matches" in row
    code, text = dtk(monkeypatch, *args, "--strict")
    assert code == 1, text
