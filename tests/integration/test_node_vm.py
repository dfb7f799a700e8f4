"""§5 of the node issue, on a real Debian node under qemu (see node_vm): a driver
image declared with `dtk node add` loads at boot, before network-pre.target,
as KMM's worker loads it; nothing of the guest's console is scraped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtk.distro.debian import DebianArchive
from tests.integration import node_vm
from tests.integration.test_node import images

pytestmark = pytest.mark.integration

__all__ = ["images"]  # the fixture, imported so pytest finds it here too


@pytest.fixture
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The node's root and disks (about 2 GB), removed afterwards."""
    path = tmp_path_factory.mktemp("node-vm")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_declared_image_loads_at_boot_before_the_network(
        work: Path, archive: DebianArchive, kernel_61: str, images: dict[str, Path]) -> None:
    tar = node_vm.base_tar(archive, kernel_61)
    node = node_vm.make_node(tar, kernel_61, node_vm.wheels(work / "wheels"), work)
    disk = work / "images"
    disk.mkdir()
    shutil.copy(images["example"], disk / "example.tar")
    node.dtk("node", "add", "oci-archive:/mnt/images/example.tar", "--module", "dtk_example",
             "--kernel", kernel_61)
    node_vm.disks(node, disk)
    report = node_vm.boot(node, kernel_61)
    where = f"console:\n{report.console[-3000:]}\nreport: {report.facts} {report.sections}"
    assert report.facts.get("done") is not None, where
    assert report.facts["kernel"] == kernel_61
    assert report.facts["unit"] == "active 0", where
    assert "dtk_example" in report.facts["modules"].split(), where
    finished, network_pre = (int(t) for t in report.facts["order"].split())
    assert 0 < finished <= network_pre, where  # loaded before network-pre.target
    (status,) = json.loads(report.sections["status"])
    assert status["ready"] and status["kernel"] == kernel_61, status
    assert "dtk node: dtk-example: loaded" in report.sections["journal"], where
