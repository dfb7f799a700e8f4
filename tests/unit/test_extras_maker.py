"""Extras layers made when a cell compiles, once per layer, and apt's verdicts sorted into
the packages' own (remembered like a compile error) and the network's (not).

`ensure_extras` (a real `buildah bud` running apt) is replaced by a recorder here: what
is tested is the Maker's bookkeeping and the classification of apt's words. The real
layer is built by tests/integration/test_fanout.py (jool-dkms on libxtables12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk import run as runner
from dtk.driver import extras
from dtk.driver.outcome import CellFailedError
from dtk.driver.plan import Cell, ImageRef
from dtk.driver.sources import DkmsGroup, DkmsPackage
from dtk.engine import buildah
from dtk.errors import DtkError

TK = ImageRef("localhost/driver-toolkit:6.12.118_deb12-amd64", "sha256:tk")
POSTINST = ("Setting up xtables-addons-dkms (3.23-1) ...\n"
            "dpkg: error processing package xtables-addons-dkms (--configure):\n"
            " installed xtables-addons-dkms package post-installation script subprocess "
            "returned error exit status 10\n"
            "Errors were encountered while processing:\n xtables-addons-dkms")
NETWORK = ("Err:1 http://archive.invalid bookworm/main amd64 libxtables-dev 1.8.9-2\n"
           "  Temporary failure resolving 'archive.invalid'\n"
           "E: Failed to fetch http://archive.invalid/pool/libxtables-dev.deb\n"
           "dpkg: error processing package libxtables-dev (--configure):")


def cell_on(toolkit: ImageRef) -> Cell:
    package = DkmsPackage("west-chamber", "20100405", Path("/nonexistent"), "sha256:t", (),
                          "debian package west-chamber-dkms", ("libxtables-dev",))
    group = DkmsGroup("west-chamber", (package,))
    return Cell(group, "6.12.118+deb12-amd64", "localhost/x:y", toolkit, None, (), "sha256:h")


def maker_failing_with(monkeypatch: pytest.MonkeyPatch, output: str) -> tuple[
        extras.Maker, ImageRef, list[str]]:
    calls: list[str] = []

    def ensure(toolkit: ImageRef, packages: tuple[str, ...], key: str, log: Path) -> ImageRef:
        calls.append(key)
        raise runner.CommandError(["buildah", "bud"], 100, output, "buildah bud failed")
    monkeypatch.setattr(extras, "ensure_extras", ensure)
    maker = extras.Maker()
    planned = maker.add(extras._Recipe(TK, ("libxtables-dev",), "sha256:" + "ab" * 32,
                                       Path("/tmp/extras.log")))
    return maker, planned, calls


def test_a_packages_own_failure_fails_the_cell_as_a_compile_error_would(
        monkeypatch: pytest.MonkeyPatch) -> None:
    maker, planned, calls = maker_failing_with(monkeypatch, POSTINST)
    for _ in range(3):  # every cell on the layer: apt runs once
        with pytest.raises(CellFailedError, match="installing libxtables-dev into") as exc:
            maker.prepare(cell_on(planned))
        assert "post-installation script" in exc.value.output
    assert len(calls) == 1


def test_a_network_failure_is_not_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    maker, planned, _ = maker_failing_with(monkeypatch, NETWORK)
    with pytest.raises(DtkError) as exc:
        maker.prepare(cell_on(planned))
    assert not isinstance(exc.value, CellFailedError)
    assert "Temporary failure resolving" in exc.value.message


def test_the_layer_is_made_once_and_the_cell_gets_its_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def ensure(toolkit: ImageRef, packages: tuple[str, ...], key: str, log: Path) -> ImageRef:
        made.append(key)
        return ImageRef(extras.extras_tag(key), "sha256:made", content_key=key)
    monkeypatch.setattr(extras, "ensure_extras", ensure)
    monkeypatch.setattr(buildah, "image_exists", lambda name: False)
    maker = extras.Maker()
    planned = maker.add(extras._Recipe(TK, ("libxtables12",), "sha256:" + "cd" * 32,
                                       Path("/tmp/extras.log")))
    assert planned.image_id == ""  # planned, not made
    ready = [maker.prepare(cell_on(planned)) for _ in range(2)]
    assert made == ["sha256:" + "cd" * 32]
    assert all(c.toolkit is not None and c.toolkit.image_id == "sha256:made" for c in ready)
    other = cell_on(TK)
    assert maker.prepare(other) is other  # a cell on the toolkit itself: nothing to make
