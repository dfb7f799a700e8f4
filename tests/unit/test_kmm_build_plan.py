"""The pure parts of `dtk module build | vmtest | preflight`: masking, generations,
the worker configuration from a Module, the PreflightValidation object, secret reprs."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from dtk.driver.plan import BuildSecret, secrets_digest
from dtk.kmm.build import current, labels_for, signed_labels
from dtk.kmm.preflight import ModuleStatus, validation_object
from dtk.kmm.vmtest import VmOptions, guest_config
from dtk.kmmapi import model as m
from dtk.kmmapi.load import load_documents
from dtk.kmmapi.plan import GENERATION_LABEL, SIGN_LABEL, intermediate_image, plan
from dtk.run import masker
from tests.unit.kmm_support import MANIFESTS, container, minimal, write

STD = "6.1.0-56-amd64"


def test_masker_hides_values_and_their_lines() -> None:
    hide = masker(["t0ken-value", "-----BEGIN KEY-----\nc2VjcmV0LWxpbmU=\n-----END KEY-----"])
    assert hide("token is: t0ken-value!") == "token is: ***!"
    assert hide("c2VjcmV0LWxpbmU=") == "***"
    assert hide("nothing here") == "nothing here"
    assert masker(["ab"])("a cab") == "a cab"  # too short to mask without blanking words


def test_build_secret_repr_and_digest_hide_values() -> None:
    secret = BuildSecret("tok", (("token", b"hunter2-secret"),))
    assert "hunter2" not in repr(secret) and "token" in repr(secret)
    digest = secrets_digest([secret], b"host key")
    assert "hunter2" not in digest
    assert digest != secrets_digest([BuildSecret("tok", (("token", b"other"),))], b"host key")
    # Keyed: the plain sha256 of a guess does not confirm it, and another host differs.
    assert hashlib.sha256(b"hunter2-secret").hexdigest() not in digest
    assert digest != secrets_digest([secret], b"another host")


def test_generation_label_decides_reuse() -> None:
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    kp = replace(plan(mod, [STD], bundle).kernels[0], sign=None)
    assert current(mod, kp, {}) and labels_for(mod) == {"dtk.kmm.module": "drivers/kmm-ci"}
    bumped = replace(mod, image_rebuild_trigger_generation=3)
    assert labels_for(bumped)[GENERATION_LABEL] == "3"
    assert not current(bumped, kp, {GENERATION_LABEL: "2"}) and not current(bumped, kp, {})
    assert current(bumped, kp, {GENERATION_LABEL: "3"})


def test_sign_label_decides_reuse() -> None:
    """An image made without the Module's sign spec (or with another) does not count."""
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    kp = plan(mod, [STD], bundle).kernels[0]
    assert kp.sign is not None and kp.sign.digest
    assert not current(mod, kp, {})  # built before the Module had a sign section
    assert current(mod, kp, signed_labels(mod, kp))
    assert not current(mod, kp, {SIGN_LABEL: "another spec"})
    assert not current(mod, replace(kp, sign=None), signed_labels(mod, kp))
    # The label holds no secret: not the key's bytes, nor anything of them.
    key = bundle.secret(mod.namespace, kp.sign.key_secret)
    assert key is not None
    assert hashlib.sha256(key.data["key"]).hexdigest() not in kp.sign.digest


def test_build_and_sign_build_to_kmms_intermediate_name() -> None:
    # KMM's helper_test.go (before 9d626f4): IntermediateImageName("module-name",
    # "test-namespace", "some-image-name") and AppendToTag on a tagged name.
    assert intermediate_image("module-name", "test-namespace", "some-image-name") == \
        "some-image-name:test-namespace_module-name_kmm_unsigned"
    assert intermediate_image("m", "ns", "some-container-image-name:with-a-tag") == \
        "some-container-image-name:with-a-tag_ns_m_kmm_unsigned"
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    kp = plan(mod, [STD], bundle).kernels[0]
    assert kp.sign is not None and kp.build is not None
    assert kp.build_image == kp.sign.unsigned_image == \
        f"{kp.image}_{mod.namespace}_{mod.name}_kmm_unsigned"


def test_guest_config_follows_the_modprobe_spec() -> None:
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    kp = plan(mod, [STD], bundle).kernels[0]
    config = guest_config(mod, kp, VmOptions(firmware_host="/lib/firmware"))
    assert config.load_argv() == ["-vd", "/opt", "kmm_ci_a", "debug=1"]
    assert config.unload_argv() == ["-rvd", "/opt", "kmm_ci_a", "kmm_ci_b"]
    assert config.loading_order == ("kmm_ci_a", "kmm_ci_b")
    assert config.in_tree_to_remove == ("kmm_ci_old",)
    assert config.firmware_host == "/lib/firmware"
    assert mod.module_loader is not None
    probe = mod.module_loader.container.modprobe
    raw = replace(probe, raw_args=m.ModprobeArgs(load=("-v", "x"), unload=("-r", "x")))
    container = replace(mod.module_loader.container, modprobe=raw)
    mod2 = replace(mod, module_loader=replace(mod.module_loader, container=container))
    config = guest_config(mod2, kp, VmOptions())
    assert (config.load_argv(), config.unload_argv()) == (["-v", "x"], ["-r", "x"])


def test_validation_object_has_kmm_v1beta2_shape() -> None:
    status = ModuleStatus("m", "ns", "Failure", "Image", "no kernelMapping matches", "T")
    doc = validation_object([status], "6.12.117+deb12-amd64", push_built_image=True)
    assert doc["apiVersion"] == "kmm.sigs.x-k8s.io/v1beta2"
    assert doc["metadata"]["name"] == "preflight-6.12.117-deb12-amd64"
    assert doc["spec"] == {"kernelVersion": "6.12.117+deb12-amd64", "pushBuiltImage": True}
    assert doc["status"]["modules"] == [{
        "name": "m", "namespace": "ns", "verificationStatus": "Failure",
        "statusReason": "no kernelMapping matches", "verificationStage": "Image",
        "lastTransitionTime": "T"}]


def test_worker_appends_args_to_its_own(tmp_path: Path) -> None:
    """KMM's worker (internal/worker/worker.go): load is `modprobe -vd /tmp/<dirName>
    [args.load…] moduleName [parameters…]`, unload `modprobe -rvd /tmp/<dirName>
    [args.unload…] (modulesLoadingOrder | moduleName)`: args are appended to its own
    flags, never in their place (an args.unload without -r would load, not unload)."""
    doc = minimal()
    container(doc)["modprobe"] = {
        "moduleName": "hello", "dirName": "/drivers", "parameters": ["p=1"],
        "args": {"load": ["--first-time"], "unload": ["--syslog"]}}
    bundle = load_documents([write(tmp_path, doc)])
    mod = bundle.module(None)
    kp = plan(mod, [STD], bundle).kernels[0]
    config = guest_config(mod, kp, VmOptions())
    assert config.load_argv() == ["-vd", "/drivers", "--first-time", "hello", "p=1"]
    assert config.unload_argv() == ["-rvd", "/drivers", "--syslog", "hello"]
