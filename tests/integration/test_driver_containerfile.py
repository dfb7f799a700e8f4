"""`dtk build -f Containerfile`: the example driver, a failing build, and --push to a
real loopback registry (the session's Debian docker-registry, see conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.engine import buildah, skopeo
from tests.integration.conftest import RestartableRegistry, free_port
from tests.integration.test_driver_dkms import (
    by_cell,
    check_driver_image,
    no_staging_images,
    prefix,
    run_build,
)

pytestmark = pytest.mark.integration

__all__ = ["prefix"]  # the fixture, imported so pytest finds it here too

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "examples/dtk-example/Containerfile"
BAD = ROOT / "tests/data/build/badcontainer/Containerfile"
TEMPLATE = "${MOD_NAME}:${KERNEL_FULL_VERSION}"


@pytest.mark.usefixtures("toolkit_61")
def test_example_containerfile_for_standard_and_rt(tmp_path: Path, prefix: str,
                                                   kernel_61: str, kernel_61_rt: str) -> None:
    args = ["-f", str(EXAMPLE), "--kernel", kernel_61, "--kernel", kernel_61_rt,
            "--image", f"localhost/{prefix}/{TEMPLATE}"]
    code, result, err = run_build(tmp_path, *args)
    assert code == 0, err
    for (module, kernel), cell in by_cell(result).items():
        assert module == "dtk-example"
        assert cell["status"] == "built", cell
        assert cell["modules"] == ["dtk_example=1.0"]
        assert cell["image"] == f"localhost/{prefix}/dtk-example:{kernel}"
        labels = check_driver_image(cell["image"], kernel, {"dtk_example"})
        assert labels["dtk.build.modules"] == "dtk_example=1.0"
    code, again, err = run_build(tmp_path, *args)
    assert code == 0, err
    assert all(c["cached"] for c in again["outcomes"])
    assert no_staging_images()


@pytest.mark.usefixtures("toolkit_61")
def test_failing_containerfile_tags_nothing(tmp_path: Path, prefix: str,
                                            kernel_61: str) -> None:
    code, result, _ = run_build(tmp_path, "-f", str(BAD), "--kernel", kernel_61,
                                "--image", f"localhost/{prefix}/{TEMPLATE}")
    assert code == 1
    (cell,) = result["outcomes"]
    assert cell["status"] == "failed"
    assert cell["reason"] == f"the Containerfile failed to build for {kernel_61}"
    assert any("fails on purpose" in line for line in cell["tail"])
    assert "fails on purpose" in Path(cell["log"]).read_text()
    assert not buildah.image_exists(cell["image"])
    assert no_staging_images()


@pytest.mark.usefixtures("toolkit_61")
def test_push_to_a_loopback_registry(tmp_path: Path, prefix: str, registry: str,
                                     kernel_61: str) -> None:
    code, result, err = run_build(tmp_path, "-f", str(EXAMPLE), "--kernel", kernel_61, "--push",
                                  "--image", f"{registry}/{prefix}/{TEMPLATE}")
    assert code == 0, err
    (cell,) = result["outcomes"]
    assert cell["status"] == "built"
    remote = skopeo.remote_inspect(cell["image"])
    assert remote is not None and cell["pushed"] == remote["Digest"]
    assert remote["Labels"]["dtk.build.kernel"] == kernel_61


@pytest.mark.usefixtures("toolkit_61")
def test_unreachable_registry_is_a_failed_cell_not_a_push(tmp_path: Path, prefix: str,
                                                          kernel_61: str) -> None:
    closed = free_port()  # nothing listens there
    code, result, _ = run_build(tmp_path, "-f", str(EXAMPLE), "--kernel", kernel_61, "--push",
                                "--image", f"127.0.0.1:{closed}/{prefix}/{TEMPLATE}")
    assert code == 1
    (cell,) = result["outcomes"]
    assert cell["status"] == "failed"
    assert cell["pushed"] == ""
    assert cell["reason"].startswith("built, but pushing ")
    assert cell["reason"].endswith(f"the registry at 127.0.0.1:{closed} is not reachable "
                                   "(connection refused)")
    assert cell["reason"] in Path(cell["log"]).read_text()
    # A push that fails is no verdict on the cell: --exit-zero (what a CI worker runs)
    # still exits 1, so that the worker is retried; the image is a cache hit now.
    code, result, _ = run_build(tmp_path, "-f", str(EXAMPLE), "--kernel", kernel_61, "--push",
                                "--image", f"127.0.0.1:{closed}/{prefix}/{TEMPLATE}",
                                "--exit-zero")
    assert code == 1
    (cell,) = result["outcomes"]
    assert cell["reason"].startswith("cache hit, but pushing ") and cell["retry"]


@pytest.mark.usefixtures("toolkit_61")
def test_push_with_authfile_and_unauthorized_as_the_reason(
        tmp_path: Path, prefix: str, kernel_61: str,
        restartable_registry: RestartableRegistry) -> None:
    image = f"{restartable_registry.auth.address}/{prefix}/{TEMPLATE}"
    code, result, _ = run_build(tmp_path, "-f", str(EXAMPLE), "--kernel", kernel_61, "--push",
                                "--image", image)
    assert code == 1
    (cell,) = result["outcomes"]
    assert cell["reason"].endswith("refused the credentials (unauthorized)"), cell
    assert any("--authfile" in line for line in cell["tail"])
    assert cell["reason"] in Path(cell["log"]).read_text()
    code, result, err = run_build(tmp_path, "-f", str(EXAMPLE), "--kernel", kernel_61, "--push",
                                  "--image", image, "--authfile",
                                  str(restartable_registry.authfile))
    assert code == 0, err
    (cell,) = result["outcomes"]
    remote = skopeo.remote_inspect(cell["image"], authfile=restartable_registry.authfile)
    assert remote is not None and cell["pushed"] == remote["Digest"]
