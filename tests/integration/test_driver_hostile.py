"""A hostile DKMS tree or build gets no host file into a driver image.

The attacks are the ones a package author (or their build) can make: a `firmware/`
that is a symlink to a host directory, and a build that swaps its staged output tree
(`/opt`) for a link whose target means one thing in the container, another to dtk's
checks and a third on the host. The host directory holds a marker; no image may.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtk.engine import buildah
from tests.integration.test_driver_dkms import by_cell, hello_variant, prefix, run_build

pytestmark = pytest.mark.integration

__all__ = ["prefix"]  # the fixture, shared with test_driver_dkms

MARKER = b"dtk-test-host-secret-5d1c"


def host_dir(tmp_path: Path) -> Path:
    """A host directory with a marker file, as a private key directory would be."""
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "id_rsa").write_bytes(MARKER + b"\n")
    return secret


def images_with_marker(image: str) -> list[str]:
    """Paths in `image` whose content holds MARKER (links not followed)."""
    found = []
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                if MARKER in path.read_bytes():
                    found.append(str(path.relative_to(root)))
    return found


@pytest.mark.usefixtures("toolkit_61")
def test_firmware_link_to_a_host_directory_stays_out(tmp_path: Path, prefix: str,
                                                     kernel_61: str) -> None:
    tree = hello_variant(tmp_path, "dtkhello")
    (tree / "firmware").symlink_to(host_dir(tmp_path))
    code, result, err = run_build(
        tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
        "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    cell = by_cell(result)[("dtkhello", kernel_61)]
    # Resolved inside the tree, the link names nothing there: the module builds, and
    # the image has no firmware.
    assert code == 0 and cell["status"] == "built", err
    assert images_with_marker(cell["image"]) == []


@pytest.mark.usefixtures("toolkit_61")
def test_build_that_swaps_opt_for_a_host_link_publishes_nothing(
        tmp_path: Path, prefix: str, kernel_61: str) -> None:
    secret = host_dir(tmp_path)
    tree = hello_variant(tmp_path, "dtkhello")
    # Sourced by dkms inside the toolkit, before the cell copies its modules out: /opt
    # becomes a link to SECRET's path. In the container that path is a link back into
    # the output tree, so the copy and depmod succeed and dtk's checks find modules;
    # on the host the same link text names SECRET itself.
    conf = tree / "dkms.conf"
    conf.write_text(conf.read_text() + (
        'if [ -e /dtk-out/cell.sh ] && [ -n "$kernelver" ]; then\n'
        f'  H={secret}\n'
        '  mkdir -p "/dtk-out$H/lib/modules/$kernelver/updates/dkms" "${H%/*}"\n'
        '  ln -sfn "/dtk-out$H" "$H"\n'
        '  rm -rf /dtk-out/opt && ln -s "$H" /dtk-out/opt\n'
        'fi\n'))
    code, result, err = run_build(
        tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
        "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    cell = by_cell(result)[("dtkhello", kernel_61)]
    if buildah.image_exists(cell["image"]):
        assert images_with_marker(cell["image"]) == []
    assert cell["status"] == "failed", err
    assert "/opt" in cell["reason"]
    assert not buildah.image_exists(cell["image"])
    assert code == 1
