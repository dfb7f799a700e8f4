"""Declarations, outcomes and pins that tell the truth (issue 24 §4, §5): what was
prepared for an earlier form of a declaration is never loaded, kernel releases
never become paths that climb, and a torn cache is rebuilt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dtk.cli.main import run_cli
from dtk.node import agent, declare, oci, prepare
from dtk.node.layout import Layout

K = "6.1.0-57-amd64"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = run_cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def layout_dir(root: Path, name: str) -> Path:
    """A hand-made OCI layout (an `oci:DIR` a declaration can name; never fetched here)."""
    path = root / "images" / name
    path.mkdir(parents=True)
    (path / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    return path


def declared_and_prepared(capsys: pytest.CaptureFixture[str], root: Path) -> Layout:
    """`drv` declared, with a ready outcome and a pin recorded for it (as prepare leaves
    them), its tree on disk."""
    image = layout_dir(root, "a")
    code, text = run(capsys, "node", "add", f"oci:{image}", "--module", "drv", "--kernel", K,
                     "--root", str(root))
    assert code == 0, text
    layout = Layout(root)
    decl = declare.find(layout, "drv")
    tree = layout.trees / "sha256-old"
    (tree / f"opt/lib/modules/{K}").mkdir(parents=True)
    # (getattr: this test also ran on the code before outcomes named their declaration)
    kwargs: dict[str, Any] = {"declaration": decl.digest} if hasattr(decl, "digest") else {}
    prepare.record(layout, prepare.Outcome("drv", K, True, "loads", f"oci:{image}",
                                           "sha256:old", "", "trees/sha256-old",
                                           ("drv",), **kwargs))
    layout.pins.write_text(json.dumps({"drv": {f"oci:{image}": {"digest": "sha256:old",
                                                               "pinned_at": "2026-01-01"}}}))
    return layout


@pytest.mark.parametrize("flags", [(), ("--require-signature",)])
def test_replace_drops_what_was_prepared_for_the_old_declaration(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: tuple[str, ...]) -> None:
    """After `add --replace` (a new image, or --require-signature) the next boot must not
    insert the old image from what was prepared before."""
    layout = declared_and_prepared(capsys, tmp_path)
    image = layout_dir(tmp_path, "b")
    code, text = run(capsys, "node", "add", f"oci:{image}", "--module", "drv", "--replace",
                     *flags, "--kernel", K, "--root", str(tmp_path))
    assert code == 0, text
    assert prepare.recorded(layout, K, "drv") is None
    assert "drv" not in (json.loads(layout.pins.read_text()) if layout.pins.exists() else {})
    (status,) = prepare.status(layout, K)
    assert not status.ready


def test_an_outcome_for_another_form_of_the_declaration_is_not_loaded(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The declaration edited in place (by hand, or by an older dtk): its recorded ready
    outcome names another image; the boot prepares again instead of loading it."""
    layout = declared_and_prepared(capsys, tmp_path)
    path = layout.declaration("drv")
    path.write_text(path.read_text().replace("images/a", "images/b"))
    layout_dir(tmp_path, "b")
    decl = declare.find(layout, "drv")
    outcome = agent._ready_outcome(layout, decl, K)  # the boot unit's decision
    assert outcome.tree != "trees/sha256-old"
    assert not outcome.ready  # the hand-made layout holds no image: fetched, and refused
    (status,) = prepare.status(layout, K)
    assert status.image.endswith("images/b") or not status.ready


@pytest.mark.parametrize("argv", [("node", "clean", "--kernel", "../.."),
                                  ("node", "prepare", "--kernel", "../../etc"),
                                  ("node", "status", "--kernel", "a/b"),
                                  ("node", "add", "reg.example/x:1", "--module", "m",
                                   "--kernel", ".."),
                                  ])
def test_a_kernel_release_is_never_a_path(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         argv: tuple[str, ...]) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dtk/kernels").mkdir(parents=True)
    (root / "var/lib/precious").write_text("keep")
    (root / "etc").mkdir()
    code, text = run(capsys, *argv, "--root", str(root))
    assert code == 2, text
    assert "is not a kernel release" in text and "Traceback" not in text
    assert (root / "var/lib/precious").read_text() == "keep"
    assert not (root / "etc/dtk").exists()


def test_a_torn_oci_layout_is_fetched_again_not_a_permanent_failure(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    (layout / "blobs/sha256").mkdir(parents=True)
    (layout / "blobs/sha256/x").write_bytes(b"x")
    (layout / "index.json").write_text("{torn")
    oci.prune(layout, set())
    assert not layout.exists()  # a download cache: gone, and fetched again when needed


def test_one_declarations_failure_never_stops_the_others(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The boot unit's loop: a declaration whose load raises a bug (not a DtkError) is
    recorded as not loaded with what happened, and the ones after it still run. The
    action stands in for inserting modules, which this host cannot do (the node VM
    test inserts them)."""
    for name in ("a-first", "b-broken", "c-last"):
        assert run(capsys, "node", "add", "reg.example/x:1", "--module", name, "--kernel", K,
                   "--root", str(tmp_path))[0] == 0
    ran = []

    def action(layout: Layout, decl: declare.Declaration, kernel: str) -> agent.Loaded:
        ran.append(decl.name)
        if decl.name == "b-broken":
            raise KeyError("a bug")
        return agent.Loaded(decl.name, kernel, True, "loads")

    results = agent.each_isolated(Layout(tmp_path), K, action)
    assert ran == ["a-first", "b-broken", "c-last"]
    assert [r.loaded for r in results] == [True, False, True]
    assert "dtk failed unexpectedly (KeyError" in results[1].reason
    assert "traceback follows" in capsys.readouterr().err
    record = agent.loaded_record(Layout(tmp_path), "b-broken")
    assert record is not None and not record.loaded
