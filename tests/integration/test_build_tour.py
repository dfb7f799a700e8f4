"""What the new-user tour (issue 28) found in `dtk build` and `dtk toolkit build`,
against the real archive, this machine's toolkits and a real htpasswd registry:

- `--dry-run` names the image the build makes (dkms.conf names a DKMS source's
  cells) and honours `--shard`;
- a toolkit is looked for once per run, also when an RT kernel comes first;
- `--plan` does not suggest a toolkit build for a kernel the archive lacks;
- `toolkit build --cache` takes `--authfile`/`--tls-verify`, shows a long store and
  says it is stored, and does not say "building locally" when nothing is built;
- every line of these commands fits $COLUMNS (with tests/unit/test_output_width.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtk.distro.debian import DebianArchive
from dtk.engine import buildah
from dtk.toolkit import plan as tplan
from dtk.toolkit.images import ToolkitImage, is_current
from tests.integration.conftest import RestartableRegistry

pytestmark = pytest.mark.integration

HELLO = Path(__file__).resolve().parents[1] / "data" / "build" / "dtkhello"


def dtk(*args: str, columns: int = 120) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True,
                          text=True, timeout=1800, check=False,
                          env={**os.environ, "COLUMNS": str(columns)})
    return proc.returncode, proc.stdout, proc.stderr


def _fits(columns: int, *texts: str) -> None:
    wide = [line for text in texts for line in text.splitlines() if len(line) > columns]
    assert wide == [], wide


@pytest.fixture
def template() -> Iterator[str]:
    """Driver images of this test's own, removed after it: under dtk's default names
    they would be cache hits for other tests (tests/integration/test_dtk_image.py
    reads this machine's storage)."""
    repo = f"localhost/dtk-tour-{uuid.uuid4().hex[:8]}"
    yield f"{repo}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}"
    for row in buildah.images():
        for name in row.get("names") or ():
            if name.startswith(repo + "/"):
                buildah.remove_image(name)


@pytest.fixture
def rt_612(toolkit_612: ToolkitImage) -> str:
    assert toolkit_612.rt_kernel
    return toolkit_612.rt_kernel


def test_the_dry_run_names_what_the_build_makes_and_honours_the_shard(
        toolkit_612: ToolkitImage, kernel_612: str, rt_612: str) -> None:
    kernels = ["--kernel", kernel_612, "--kernel", rt_612]
    code, out, err = dtk("build", "--dkms", "acpi-call-dkms", *kernels, "--dry-run",
                         "--shard", "2/2", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["shard"] == "2/2" and not dry["names_guessed"]
    # the build's own plan: the cells of shard 2, with the images they make
    code, out, err = dtk("build", "--dkms", "acpi-call-dkms", *kernels, "--plan",
                         "--shard", "2/2", "--json")
    assert code == 0, err
    planned = [(c["module"], c["kernel"], c["image"]) for c in json.loads(out)["cells"]
               if c["shard"] == 2]
    assert [(c["module"], c["kernel"], c["image"]) for c in dry["cells"]] == planned
    assert len(planned) == 1  # one of the two cells
    assert planned[0][2].startswith("localhost/dtk-driver/acpi-call:")  # not acpi-call-dkms
    for columns in (120, 80):
        code, out, err = dtk("build", "--dkms", "acpi-call-dkms", *kernels, "--dry-run",
                             "--shard", "2/2", columns=columns)
        assert code == 0 and "of shard 2/2" in out
        _fits(columns, out, err)


def test_without_a_toolkit_the_dry_run_says_its_names_are_guessed(
        archive: DebianArchive) -> None:
    """A kernel of the archive whose toolkit this machine does not have (chosen now:
    the archive and this machine's storage move on)."""
    kernel = next(e.release for e in archive.kernels()
                  if not is_current(tplan.plan_toolkit(archive, e.release, "auto")))
    code, out, err = dtk("build", "--dkms", "acpi-call-dkms", "--kernel", kernel,
                         "--dry-run", "--shard", "1/2", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["names_guessed"] and dry["toolkits_to_build"]
    code, out, err = dtk("build", "--dkms", "acpi-call-dkms", "--kernel", kernel,
                         "--dry-run", "--shard", "1/2")
    assert "guessed from the package or directory" in " ".join(err.split())
    assert "split is not known yet" in " ".join(err.split())


def test_a_toolkit_is_looked_for_once_when_the_rt_kernel_comes_first(
        toolkit_612: ToolkitImage, kernel_612: str, rt_612: str, template: str) -> None:
    """The tour's "toolkit for K" twice: the RT kernel's toolkit (its standard
    sibling's) was found for reading dkms.conf, then looked for again for the
    shard's own cell."""
    code, out, err = dtk("build", "--dkms", str(HELLO), "--kernel", rt_612, "--kernel",
                         kernel_612, "--shard", "1/2", "--image", template, "--json")
    assert code == 0, err
    [cell] = json.loads(out)["outcomes"]
    assert cell["kernel"] == kernel_612  # the shard's cell is the standard kernel's
    assert err.count(f"toolkit {toolkit_612.name} is up to date") == 1, err


def test_the_plan_suggests_no_toolkit_for_a_kernel_the_archive_lacks() -> None:
    code, _out, err = dtk("build", "--dkms", "acpi-call-dkms", "--kernel", "6.1.0-999-amd64",
                          "--plan")
    assert code == 2
    assert "toolkit build --kernel 6.1.0-999-amd64" not in err
    assert "none of its kernels is in the archive" in err


@pytest.fixture
def toolkit_registry(tmp_path: Path) -> Iterator[RestartableRegistry]:
    """A registry of this test's own: a stored toolkit (1.2 GB) is removed with it."""
    served = RestartableRegistry(tmp_path)
    served.start()
    try:
        yield served
    finally:
        served.stop()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_toolkit_build_stores_with_credentials_and_says_so(
        toolkit_registry: RestartableRegistry, toolkit_612: ToolkitImage, kernel_612: str,
        tmp_path: Path) -> None:
    repo = f"{toolkit_registry.auth.address}/dtk-cache"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(toolkit_registry.auth.dockerconfigjson("not-the-password"))
    # Refused credentials, the toolkit up to date: a warning with the fix, and no claim
    # that anything is built.
    code, _out, err = dtk("toolkit", "build", "--kernel", kernel_612, "--cache", repo,
                          "--authfile", str(wrong))
    assert code == 0, err
    said = " ".join(err.split())
    assert "refused the credentials" in said and "--authfile" in said
    assert "building locally" not in said and f"not storing {toolkit_612.name} there" in said
    # TLS as the user says: verification asked of a plain-HTTP registry
    code, _out, err = dtk("toolkit", "build", "--kernel", kernel_612, "--cache", repo,
                          "--authfile", str(toolkit_registry.authfile), "--tls-verify")
    assert code == 0 and "speaks plain HTTP" in err and "--no-tls-verify" in err
    # The store: announced with its size, ended with a "stored" line.
    code, out, err = dtk("toolkit", "build", "--kernel", kernel_612, "--cache", repo,
                         "--authfile", str(toolkit_registry.authfile), "--json")
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    steps = [e["message"] for e in events if e["kind"] == "step"]
    storing = [s for s in steps if s.startswith(f"storing {toolkit_612.name} (")]
    stored = [s for s in steps if s.startswith(f"stored {toolkit_612.name} as {repo}:")]
    assert storing and re.search(r" MB\) in the cache as ", storing[0]), steps
    assert stored and re.search(r"in \d+s$", stored[0]), steps
    # between them, each blob skopeo starts: progress a log shows too
    between = steps[steps.index(storing[0]) + 1:steps.index(stored[0])]
    assert any(s.strip().startswith("Copying blob sha256:") for s in between), steps
    assert json.loads(out)[0]["name"] == toolkit_612.name
    # Stored already: nothing more to say about it.
    code, _out, err = dtk("toolkit", "build", "--kernel", kernel_612, "--cache", repo,
                          "--authfile", str(toolkit_registry.authfile))
    assert code == 0 and "storing" not in err


def _plan_cells(plan: dict[str, Any]) -> list[str]:
    return [f"{c['module']}@{c['kernel']}" for c in plan["cells"]]


def test_a_plan_of_many_shards_fits_the_terminal(toolkit_612: ToolkitImage,
                                                 kernel_612: str) -> None:
    """The tour's 640-column `--shard 1/201 --plan` line."""
    for columns in (120, 80):
        code, out, err = dtk("build", "--dkms", str(HELLO), "--kernel", kernel_612,
                             "--shard", "1/201", "--plan", columns=columns)
        assert code == 0, err
        _fits(columns, out, err)
        assert "from 0 to " in " ".join(out.split())  # the loads' range; --json has each
    code, out, _err = dtk("build", "--dkms", str(HELLO), "--kernel", kernel_612,
                          "--shard", "1/201", "--plan", "--json")
    assert len(json.loads(out)["loads"]) == 201
    assert _plan_cells(json.loads(out)) == [f"dtkhello@{kernel_612}"]


def test_the_commands_on_real_images_fit_the_terminal(toolkit_612: ToolkitImage,
                                                      kernel_612: str, rt_612: str,
                                                      template: str) -> None:
    """`dtk check`'s findings (the tour: 147 columns), listings of toolkits and kernels,
    a build's table and summary: every line at 120 and at 80 columns."""
    code, out, err = dtk("build", "--dkms", str(HELLO), "--kernel", kernel_612, "--image",
                         template, "--json")
    assert code == 0, err
    image = json.loads(out)["outcomes"][0]["image"]
    for columns in (120, 80):
        for argv in (["check", image, "--kernel", rt_612, "--secure-boot"],
                     ["check", image, "--kernel", rt_612, "--kernel", kernel_612],
                     ["toolkit", "list"], ["toolkit", "inspect", kernel_612],
                     ["kernels"], ["build", "--dkms", str(HELLO), "--kernel", kernel_612,
                                   "--kernel", rt_612, "--image", template]):
            code, out, err = dtk(*argv, columns=columns)
            assert code in (0, 1), err
            _fits(columns, out, err)
