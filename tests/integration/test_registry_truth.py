"""What `dtk module build --push` reports as pushed, and what `render` pins, are the
bytes in local storage (the ones `module vmtest` boots), across a registry that
goes away in the middle of a run and comes back with its old content (issue 17 §1)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtk.engine import buildah, skopeo
from tests.integration import kmm_docs as docs
from tests.integration.conftest import RestartableRegistry
from tests.unit.kmm_support import dtk

pytestmark = pytest.mark.integration


def _build(files: Path, kernel: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    with pytest.MonkeyPatch.context() as mp:
        code, text = dtk(mp, "module", "build", "-f", str(files), "--kernel", kernel,
                         "--push", "--json", *extra)
    data, _ = json.JSONDecoder().raw_decode(text[text.index('{\n  "module"'):])
    return code, data["results"][0], text


def _run(*args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        return dtk(mp, *args)


def test_a_stale_registry_image_is_replaced_and_never_reported_current(
        restartable_registry: RestartableRegistry, kernel_61: str, toolkit_61: Any,
        tmp_path: Path) -> None:
    del toolkit_61
    reg = restartable_registry
    image = f"{reg.auth.address}/truth-{secrets.token_hex(4)}/m:{kernel_61}"
    mod = docs.module("truth", [{"literal": kernel_61, "containerImage": image}],
                      build={"dockerfileConfigMap": {"name": "df"}})
    mod["spec"]["imageRepoSecret"] = {"name": "repo"}
    files = docs.write(tmp_path / "m.yaml", mod, docs.configmap("df", docs.DOCKERFILE),
                       docs.repo_secret(reg.auth.dockerconfigjson()))

    def config_digest() -> str | None:
        return skopeo.remote_config_digest(image, authfile=reg.authfile)
    try:
        code, first, text = _build(files, kernel_61)
        assert code == 0 and first["action"] == "built" and first["pushed"], text
        old = config_digest()
        assert old == "sha256:" + buildah.image_id(image)

        reg.stop()  # the registry goes away: the rebuilt image cannot be pushed
        try:
            code, second, text = _build(files, kernel_61, "--rebuild")
            assert code == 1 and second["action"] == "failed", text
            assert second["reason"].endswith(f"the registry at {reg.auth.address} is not "
                                             "reachable (connection refused)"), text
            assert "not reachable" in Path(second["log"]).parent.joinpath(
                "registry.log").read_text()
        finally:
            reg.start()  # ... and comes back with the old image
        new_id = buildah.image_id(image)
        assert config_digest() == old != "sha256:" + new_id

        code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61)
        assert code == 2 and "the registry holds other bytes than local storage" in text, text
        code, text = _run("module", "vmtest", "-f", str(files), "--kernel", kernel_61)
        assert code == 0, text  # it proves the local image, and says it is not the registry's
        assert f"warning: {kernel_61}: booted the local {image}; its registry holds other " \
            "bytes" in text

        code, third, text = _build(files, kernel_61)
        assert code == 0 and third["action"] == "exists", text
        assert third["pushed"] and third["pushed"] != first["pushed"], text
        assert "held another image" in third["note"]
        assert config_digest() == "sha256:" + new_id

        code, fourth, text = _build(files, kernel_61)  # nothing left to push
        assert code == 0 and (fourth["pushed"], fourth["registry"]) == ("", third["pushed"])

        out = tmp_path / "render.yaml"
        code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61,
                          "-o", str(out))
        assert code == 0, text
        mapping = yaml.safe_load(out.read_text())["spec"]["moduleLoader"]["container"][
            "kernelMappings"][0]
        assert mapping["containerImage"].endswith("@" + third["pushed"])
    finally:
        buildah.remove_image(image)
