"""`dtk toolkit prune` and `dtk build prune` remove only what dtk's records say it made.

Labels are copied into every image built `FROM` a toolkit or a driver image, so the
images users build on dtk's (tagged, or untagged `--layers` caches) carry them too;
those must survive every prune. These tests run on their own container storage
(CONTAINERS_STORAGE_CONF) and their own dtk state: they prune.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dtk import run as runner
from dtk.distro import aptsources
from dtk.driver import prune as driver_prune
from dtk.driver.plan import KIND_LABEL as DRIVER_KIND_LABEL
from dtk.engine import buildah, made
from dtk.errors import DtkError
from dtk.toolkit import prune as toolkit_prune
from dtk.toolkit.plan import KIND_LABEL as TOOLKIT_KIND_LABEL

pytestmark = pytest.mark.integration


def image(name: str | None, labels: dict[str, str], base: str = "scratch") -> str:
    """A tiny image FROM `base` with `labels`, tagged `name` (None: left untagged, as a
    rebuild or a `--layers` cache leaves one); its id."""
    tag = name or "localhost/dtk-test-superseded:x"
    with buildah.working_container(base) as ctr:
        for key, value in labels.items():
            ctr.config("--label", f"{key}={value}")
        ctr.config("--label", f"dtk-test-name={tag}")  # distinct ids for equal labels
        image_id = ctr.commit(tag)
    if name is None:
        with buildah.working_container("scratch") as ctr:
            ctr.commit(tag)  # takes the tag: the first image is untagged now
        buildah.remove_image(tag)
    return image_id


def made_by_dtk(name: str | None, kind: str, labels: dict[str, str]) -> str:
    """An image as dtk makes one: labelled with its kind, built, then recorded
    (dtk.engine.made)."""
    kind_label = DRIVER_KIND_LABEL if kind == "driver" else TOOLKIT_KIND_LABEL
    image_id = image(name, {kind_label: kind, **labels})
    made.record(image_id, name or "", kind)
    return image_id


def ids(removals: list[toolkit_prune.Removal] | list[driver_prune.Removal]) -> set[str]:
    return {r.image_id for r in removals}


@pytest.mark.usefixtures("own_storage")
def test_toolkit_prune_spares_images_built_on_a_toolkit() -> None:
    gone_kernel = "6.1.0-999-amd64"
    labels = {"kernel-version": gone_kernel, "dtk.plan": "sha256:0", "name": "driver-toolkit"}
    toolkit = made_by_dtk(f"localhost/driver-toolkit:{gone_kernel}", "toolkit", labels)
    superseded = made_by_dtk(None, "toolkit", labels)
    users = image("localhost/users-own-driver:1", {}, base=toolkit)
    users_cache = image(None, {}, base=toolkit)
    assert buildah.labels(users)["kernel-version"] == gone_kernel  # FROM copied the labels

    removals = toolkit_prune.plan_prune({"6.1.0-57-amd64"}, set())
    assert ids(removals) == {toolkit, superseded}
    toolkit_prune.prune(removals)
    assert buildah.image_exists(users) and buildah.image_exists(users_cache)
    assert not buildah.image_exists(superseded)
    assert set(made.records()) == set()  # what was pruned is no longer recorded


@pytest.mark.usefixtures("own_storage")
def test_an_empty_catalog_prunes_nothing() -> None:
    toolkit = made_by_dtk("localhost/driver-toolkit:6.1.0-57-amd64", "toolkit",
                          {"kernel-version": "6.1.0-57-amd64"})
    with pytest.raises(DtkError, match="lists no kernel"):
        toolkit_prune.plan_prune(set(), set())
    assert buildah.image_exists(toolkit)


@pytest.mark.usefixtures("own_storage")
def test_toolkit_prune_with_sources_that_list_no_kernel_is_an_error(tmp_path: Path) -> None:
    """The machine's own sources, narrowed to a component that ships no kernel: a real
    archive answering with an empty catalog."""
    toolkit = made_by_dtk("localhost/driver-toolkit:6.1.0-57-amd64", "toolkit",
                          {"kernel-version": "6.1.0-57-amd64"})
    entries = [dataclasses.replace(e, components=("non-free-firmware",))
               for e in aptsources.read_host_sources()]
    sources = tmp_path / "no-kernels.sources"
    sources.write_text(aptsources.render(entries))
    result = subprocess.run([sys.executable, "-m", "dtk", "toolkit", "prune", "--sources",
                             str(sources), "--json"], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 2, result.stderr
    assert "lists no kernel" in json.loads(result.stdout)["error"]["message"]
    assert buildah.image_exists(toolkit)


@pytest.mark.usefixtures("own_storage")
def test_build_prune_spares_images_built_on_a_driver_image() -> None:
    driver = made_by_dtk("localhost/dtk-test/driver:x", "driver", {})
    superseded = made_by_dtk(None, "driver", {})
    users = image("localhost/users-own-layer:1", {}, base=driver)
    users_cache = image(None, {}, base=driver)
    removals = driver_prune.plan_prune(everything=True)
    assert ids(removals) == {driver, superseded}
    driver_prune.prune(removals)
    assert buildah.image_exists(users) and buildah.image_exists(users_cache)


@pytest.mark.usefixtures("own_storage")
def test_toolkit_prune_reports_exact_bytes(tmp_path: Path) -> None:
    """Sizes are the image's bytes, not `buildah images`' three rounded digits turned
    back into a number: the expected value is the layer blobs skopeo copies out of
    container storage, measured on disk."""
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(1_234_567))  # random: no layer compresses it away
    gone = "6.1.0-998-amd64"
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(payload, "/payload")
        ctr.config("--label", f"{TOOLKIT_KIND_LABEL}=toolkit", "--label",
                   f"kernel-version={gone}")
        toolkit = ctr.commit(f"localhost/driver-toolkit:{gone}")
    made.record(toolkit, f"localhost/driver-toolkit:{gone}", "toolkit")
    out = tmp_path / "copied"
    runner.run(["skopeo", "copy", "--quiet", f"containers-storage:{toolkit}", f"dir:{out}"],
               timeout=300)
    manifest = json.loads((out / "manifest.json").read_text())
    expected = sum((out / layer["digest"].split(":", 1)[1]).stat().st_size
                   for layer in manifest["layers"])
    (removal,) = toolkit_prune.plan_prune({"6.1.0-57-amd64"}, set())
    assert removal.image_id == toolkit
    assert removal.size == expected > 1_234_567
