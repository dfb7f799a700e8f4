"""`dtk prove` on a real matrix: Debian DKMS packages and a module that oopses,
built for the newest 6.1 kernel and its RT sibling (one toolkit), plus the
standard kernel's image loaded on both (the upgrade question). Every verdict
the kernel can give is in it: loaded (acpi_call), init-failed for want of
hardware (bbswitch: no _DSM, -ENODEV), crashed (dtk_oops), refused (the
standard build on RT), and the crash does not hide the cells after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtk.driver.outcome import Outcome, Status
from dtk.engine import buildah
from dtk.prove.model import ProveResult
from dtk.prove.plan import cells_for_images, cells_from_outcomes
from dtk.prove.run import prove
from dtk.toolkit.images import ToolkitImage

MISBEHAVE = Path(__file__).resolve().parents[1] / "data" / "vm" / "misbehave" / "Containerfile"
MODULES = ("acpi_call", "bbswitch", "dtk_oops")


def dtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True,
                          text=True, timeout=1800, check=False, env=dict(os.environ))


@pytest.fixture(scope="module")
def template() -> Iterator[str]:
    prefix = f"localhost/dtk-test-prove-{uuid.uuid4().hex[:8]}"
    yield prefix + "/${MOD_NAME}:${KERNEL_FULL_VERSION}"
    for row in buildah.images():
        for name in row.get("names") or ():
            if name.startswith(prefix + "/"):
                buildah.remove_image(name)


def sources(kernels: tuple[str, str], template: str) -> list[str]:
    return ["-f", str(MISBEHAVE), "--dkms", "acpi-call-dkms", "--dkms", "bbswitch-dkms",
            "--kernel", kernels[0], "--kernel", kernels[1], "--image", template]


@pytest.fixture(scope="module")
def kernels(toolkit_61: ToolkitImage, kernel_61: str, kernel_61_rt: str) -> tuple[str, str]:
    assert kernel_61_rt in toolkit_61.kernels
    return kernel_61, kernel_61_rt


@pytest.fixture(scope="module")
def built(kernels: tuple[str, str], template: str) -> list[Outcome]:
    proc = dtk("build", *sources(kernels, template), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = [Outcome(**{**o, "status": Status(o["status"]), "modules": tuple(o["modules"]),
                           "tail": tuple(o["tail"]), "notes": tuple(o["notes"])})
                for o in json.loads(proc.stdout)["outcomes"]]
    assert {o.module for o in outcomes} == {"misbehave", "acpi-call", "bbswitch"}
    return outcomes


def _matrix(built: list[Outcome], template: str, kernels: list[str]) -> list[Any]:
    upgrade = cells_for_images(template.replace("${MOD_NAME}", "acpi-call"), kernels,
                               buildah.image_id, mod_name="acpi-call-old",
                               built_for=kernels[0])
    return [*cells_from_outcomes(built, modules=MODULES), *upgrade]


def _verdicts(result: ProveResult) -> dict[tuple[str, str], tuple[str, str]]:
    return {(c.cell.row, c.cell.kernel): (c.check.value, c.boot.value) for c in result.cells}


def test_one_boot_per_kernel_plus_one_per_crash(built: list[Outcome], template: str,
                                                kernels: tuple[str, str]) -> None:
    standard, rt = kernels
    start = time.monotonic()
    result = prove(_matrix(built, template, list(kernels)), use_cache=False)
    wall = time.monotonic() - start
    print(f"\nprove: {sum(result.boots.values())} boots {result.boots}, {wall:.1f}s")
    expected: dict[tuple[str, str], tuple[str, str]] = {}
    for kernel in kernels:
        expected |= {("misbehave", kernel): ("loaded", "crashed"),
                     ("acpi-call", kernel): ("loaded", "loaded"),
                     ("bbswitch", kernel): ("loaded", "init-failed")}
    expected |= {("acpi-call-old", standard): ("loaded", "loaded"),
                 ("acpi-call-old", rt): ("refused", "refused")}
    assert _verdicts(result) == expected, [c.reasons() for c in result.cells]
    # misbehave's row comes first: its crash ends each kernel's first boot, and the
    # rows after it are proven in a second boot.
    assert result.boots == {standard: 2, rt: 2}
    assert result.disagreements == []
    cell = result.cell("bbswitch", rt)
    assert cell is not None and cell.green
    assert "-ENODEV" in cell.modules[0].boot_reason
    assert "bbswitch: No suitable _DSM call found" in cell.modules[0].boot_reason
    refused = result.cell("acpi-call-old", rt)
    assert refused is not None
    assert "disagrees about version of symbol module_layout" in refused.modules[0].boot_reason
    crashed = result.cell("misbehave", standard)
    assert crashed is not None and "NULL pointer dereference" in crashed.modules[0].boot_reason
    assert [m.boot for m in crashed.modules] == [1]

    start = time.monotonic()
    again = prove(_matrix(built, template, list(kernels)))
    print(f"prove again (cached): {sum(again.boots.values())} boots, "
          f"{time.monotonic() - start:.1f}s")
    assert again.boots == {} and all(c.cached for c in again.cells)
    assert _verdicts(again) == expected


def test_the_command_builds_proves_and_writes_the_page(built: list[Outcome], template: str,
                                                       kernels: tuple[str, str],
                                                       tmp_path: Path) -> None:
    """Build cache hits, proof cache hits: the whole command is cheap the second time,
    and fails (exit 1) because not every cell is green."""
    del built  # built (and proven by the test above, or now)
    page = tmp_path / "prove.html"
    proc = dtk("prove", *sources(kernels, template), *(a for m in MODULES
                                                       for a in ("--module", m)),
               "--html", str(page), "--json")
    assert proc.returncode == 1, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert {(c["row"], c["boot"]) for c in data["cells"]} == {
        ("misbehave", "crashed"), ("acpi-call", "loaded"), ("bbswitch", "init-failed")}
    assert {c["build"] for c in data["cells"]} == {"cached"}
    assert data["disagreements"] == 0 and not data["ok"]
    assert page.read_text().count('<td class="c ') == 6
