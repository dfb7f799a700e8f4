"""`dtk module build | vmtest | preflight | plan` against a real registry with
authentication (Debian's docker-registry, htpasswd), real toolkits and real kernels."""

from __future__ import annotations

import gzip
import json
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtk import run as runner
from dtk.engine import buildah, skopeo
from dtk.errors import DtkError
from dtk.kernel.keyring import load_cert
from dtk.kmm.state import registry_host
from dtk.kmmapi.plan import intermediate_image
from dtk.kmod import keygen
from dtk.kmod.check import SignatureTrust
from dtk.kmod.image import read_modules
from tests.integration import kmm_docs as docs
from tests.integration.conftest import AuthRegistry
from tests.unit.kmm_support import dtk

pytestmark = pytest.mark.integration


@dataclass
class Built:
    files: Path  # the manifests
    keys: keygen.KeyFiles
    images: dict[str, str]  # kernel -> image
    first: dict[str, Any]
    second: dict[str, Any]
    auth: Path


def _run(*args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        return dtk(mp, *args)


def _stdout_json(code_text: tuple[int, str]) -> tuple[int, Any]:
    code, text = code_text
    start = min(i for i in (text.find("\n{"), text.find("\n[")) if i >= 0) + 1 \
        if not text.startswith(("{", "[")) else 0
    decoder = json.JSONDecoder()
    data, _ = decoder.raw_decode(text[start:])
    return code, data


def _cleanup(*images: str, module: str = "kmm-ci") -> None:
    """The images, and the intermediate ones a build that signs leaves locally."""
    for image in images:
        buildah.remove_image(image)
        buildah.remove_image(intermediate_image(module, "kmm-test", image))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, auth_registry: AuthRegistry,
          kernel_61: str, kernel_61_rt: str, toolkit_61: Any) -> Iterator[Built]:
    """One Module, built and signed for the newest 6.1 (a literal mapping) and its RT
    sibling (a regexp for the rest), pushed with the imageRepoSecret's credentials."""
    del toolkit_61
    tmp = tmp_path_factory.mktemp("kmm-built")
    keys = keygen.keygen(tmp, "dtk kmm test")
    prefix = f"{auth_registry.address}/kmmt-{secrets.token_hex(4)}"
    files = docs.write(tmp / "module.yaml", docs.module("kmm-ci", [
        {"literal": kernel_61, "containerImage": f"{prefix}/kmm-ci:${{KERNEL_FULL_VERSION}}"},
        {"regexp": ".", "containerImage": f"{prefix}/kmm-ci-rest:${{KERNEL_FULL_VERSION}}"}],
        build={"dockerfileConfigMap": {"name": "df"}},
        sign={"keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
              "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/kmm_ci_a.ko",
                              "/opt/lib/modules/${KERNEL_FULL_VERSION}/kmm_ci_b.ko"]},
        registryTLS={"insecure": True}), docs.configmap("df", docs.DOCKERFILE),
        *docs.signing(keys.key, keys.cert_pem),
        docs.repo_secret(auth_registry.dockerconfigjson()))
    _patch_spec(files, imageRepoSecret={"name": "repo"})
    auth = tmp / "auth.json"
    auth.write_text(auth_registry.dockerconfigjson())
    args = ("module", "build", "-f", str(files), "--kernel", kernel_61, "--kernel",
            kernel_61_rt, "--push", "--json")
    code, first = _stdout_json(_run(*args))
    assert code == 0, first
    code, second = _stdout_json(_run(*args))
    images = {r["kernel"]: r["image"] for r in first["results"]}
    try:
        yield Built(files, keys, images, first, second, auth)
    finally:
        _cleanup(*images.values())


def _patch_spec(files: Path, **spec: Any) -> None:
    all_docs = list(yaml.safe_load_all(files.read_text()))
    all_docs[0]["spec"].update(spec)
    files.write_text(yaml.safe_dump_all(all_docs, sort_keys=False))


def test_build_signs_pushes_and_a_second_build_is_a_noop(built: Built, kernel_61: str,
                                                         kernel_61_rt: str) -> None:
    results = {r["kernel"]: r for r in built.first["results"]}
    assert [results[k]["action"] for k in (kernel_61, kernel_61_rt)] == ["built+signed"] * 2
    assert results[kernel_61]["image"].endswith(f"/kmm-ci:{kernel_61}")  # the literal
    assert results[kernel_61_rt]["image"].endswith(f"/kmm-ci-rest:{kernel_61_rt}")  # regexp
    for kernel, image in built.images.items():
        remote = skopeo.remote_inspect(image, tls_verify=False, authfile=built.auth)
        assert remote is not None and results[kernel]["pushed"] == remote["Digest"]
        modules = read_modules(image, cert=keygen_cert(built))
        assert {i.module.path.rsplit("/", 1)[-1]: i.trust for group in modules.values()
                for i in group} == {"kmm_ci_a.ko": SignatureTrust.TRUSTED,
                                    "kmm_ci_b.ko": SignatureTrust.TRUSTED}
    assert [r["action"] for r in built.second["results"]] == ["exists", "exists"]
    # Nothing pushed the second time: the registry already held these very bytes.
    assert [(r["pushed"], r["registry"]) for r in built.second["results"]] == \
        [("", results[k]["pushed"]) for k in (kernel_61, kernel_61_rt)]


def keygen_cert(built: Built) -> Any:
    return load_cert(built.keys.cert_pem)


def test_module_vmtest_loads_as_the_module_says(built: Built, kernel_61: str,
                                                tmp_path: Path) -> None:
    """modulesLoadingOrder, inTreeModulesToRemove and firmwarePath from the Module;
    the image is pulled from the registry (local copy removed first)."""
    _patch_spec(built.files)
    all_docs = list(yaml.safe_load_all(built.files.read_text()))
    cont = all_docs[0]["spec"]["moduleLoader"]["container"]
    cont["modprobe"].update({"modulesLoadingOrder": ["kmm_ci_a", "kmm_ci_b"],
                             "firmwarePath": "/firmware"})
    cont["inTreeModulesToRemove"] = ["dummy"]
    files = docs.write(tmp_path / "module.yaml", *all_docs)
    buildah.remove_image(built.images[kernel_61])
    code, data = _stdout_json(_run(
        "module", "vmtest", "-f", str(files), "--kernel", kernel_61, "--json", "--check",
        "cut -d' ' -f1 /proc/modules; cat /var/lib/firmware/dtk/test.bin"))
    assert code == 0, data
    (r,) = data
    assert r["verdict"] == "loaded", r
    lines = r["check_output"].splitlines()
    assert {"kmm_ci_a", "kmm_ci_b"} <= set(lines) and "dummy" not in lines
    assert "firmware bytes" in lines


def test_preflight_with_and_without_an_image(built: Built, kernel_61: str, kernel_612: str,
                                             toolkit_612: Any, tmp_path: Path) -> None:
    del toolkit_612
    out = tmp_path / "pfv.yaml"
    code, data = _stdout_json(_run("module", "preflight", "-f", str(built.files), "--kernel",
                                   kernel_61, "--json", "-o", str(out)))
    assert code == 0, data
    (status,) = data["modules"]
    assert (status["verification_status"], status["verification_stage"],
            status["image_action"]) == ("Success", "Done", "exists")
    assert status["boot"].startswith("loaded")
    pfv = yaml.safe_load(out.read_text())
    assert pfv["apiVersion"] == "kmm.sigs.x-k8s.io/v1beta2"
    assert pfv["kind"] == "PreflightValidation"
    assert pfv["spec"] == {"kernelVersion": kernel_61, "pushBuiltImage": False}
    assert pfv["status"]["modules"][0]["verificationStatus"] == "Success"
    image = built.images[kernel_61].replace(kernel_61, kernel_612).replace("/kmm-ci:",
                                                                          "/kmm-ci-rest:")
    try:
        code, data = _stdout_json(_run("module", "preflight", "-f", str(built.files),
                                       "--kernel", kernel_612, "--json"))
        assert code == 0, data["modules"][0]["status_reason"]
        (status,) = data["modules"]
        assert (status["verification_status"], status["image_action"]) == \
            ("Success", "built+signed")
        # not pushed without --push-built-image
        assert skopeo.remote_inspect(image.replace("+", "_"), tls_verify=False,
                                     authfile=built.auth) is None
    finally:
        _cleanup(image.replace("+", "_"))


def test_sign_only_from_an_unsigned_image_in_the_registry(
        built: Built, auth_registry: AuthRegistry, kernel_61_rt: str, tmp_path: Path) -> None:
    # Pushed above, signed with the first key: re-signing it with another key shows the
    # signature was made here (it verifies with this cert, the input's does not).
    signed_from = built.images[kernel_61_rt]
    prefix = signed_from.rsplit("/", 1)[0]
    keys = keygen.keygen(tmp_path, "dtk kmm re-sign")
    files = docs.write(tmp_path / "m.yaml", docs.module("signer", [
        {"regexp": "rt", "containerImage": f"{prefix}/signed:${{KERNEL_FULL_VERSION}}"}],
        sign={"unsignedImage": signed_from.replace(kernel_61_rt, "${KERNEL_FULL_VERSION}"),
              "unsignedImageRegistryTLS": {"insecure": True},
              "keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
              "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/kmm_ci_a.ko"]},
        registryTLS={"insecure": True}), *docs.signing(keys.key, keys.cert_pem),
        docs.repo_secret(auth_registry.dockerconfigjson()))
    _patch_spec(files, imageRepoSecret={"name": "repo"})
    buildah.remove_image(signed_from)
    target = f"{prefix}/signed:{kernel_61_rt}"
    try:
        code, data = _stdout_json(_run("module", "build", "-f", str(files), "--kernel",
                                       kernel_61_rt, "--push", "--json"))
        assert code == 0, data
        (r,) = data["results"]
        assert r["action"] == "signed" and r["pushed"].startswith("sha256:")
        assert not buildah.image_exists(signed_from)  # pulled to sign, then removed
        trust = {i.module.path.rsplit("/", 1)[-1]: i.trust for group in
                 read_modules(target, cert=load_cert(keys.cert_pem)).values() for i in group}
        assert trust["kmm_ci_a.ko"] is SignatureTrust.TRUSTED  # signed here, with this cert
        assert trust["kmm_ci_b.ko"] is not SignatureTrust.TRUSTED  # not in filesToSign
        # The registry refuses other credentials: a clear error, nothing pushed.
        bad = docs.write(tmp_path / "bad.yaml", *[
            d if d["kind"] != "Secret" or d["metadata"]["name"] != "repo"
            else docs.repo_secret(auth_registry.dockerconfigjson("wrong"))
            for d in _docs(files)])
        buildah.remove_image(target)
        code, data = _stdout_json(_run("module", "build", "-f", str(bad), "--kernel",
                                       kernel_61_rt, "--push", "--rebuild", "--json"))
        assert code == 1
        (r,) = data["results"]
        assert r["action"] == "failed" and r["pushed"] == ""
        assert "refused the credentials" in r["reason"], r
    finally:
        _cleanup(target)


def _docs(files: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(files.read_text()))


def test_build_secrets_stay_out_of_layers_logs_and_output(
        tmp_path: Path, kernel_61: str, toolkit_61: Any) -> None:
    del toolkit_61
    value = "s3cr3t-" + secrets.token_hex(16)
    image = f"localhost/kmmt-{secrets.token_hex(4)}/secret:{kernel_61}"
    files = docs.write(tmp_path / "m.yaml", docs.module("secret", [
        {"literal": kernel_61, "containerImage": image}],
        build={"dockerfileConfigMap": {"name": "df"}, "secrets": [{"name": "tok"}]}),
        docs.configmap("df", docs.SECRET_DOCKERFILE),
        docs.secret("tok", {"token": value.encode()}))
    try:
        code, text = _run("module", "build", "-f", str(files), "--kernel", kernel_61, "--json")
        assert code == 0, text
        assert value not in text
        data = json.loads(text[text.index('{\n  "module"'):])
        log_dir = Path(data["log_dir"])
        logs = "".join(p.read_text(errors="replace") for p in log_dir.rglob("*") if p.is_file())
        assert "token is: ***" in logs  # the RUN step read it, and printed it masked
        assert value not in logs
        assert value.encode() not in _image_bytes(image)
        assert value not in json.dumps(buildah.inspect(image))
    finally:
        _cleanup(image)


def _image_bytes(image: str) -> bytes:
    """Every layer tarball of the image (uncompressed) and every file in its tree."""
    with tempfile.TemporaryDirectory() as tmp:
        skopeo_dir = Path(tmp) / "dir"
        runner.run(["skopeo", "copy", f"containers-storage:{image}", f"dir:{skopeo_dir}"],
                   timeout=300)
        blobs = [p.read_bytes() for p in skopeo_dir.iterdir() if p.is_file()]
        out = b"".join(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b for b in blobs)
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        out += b"".join(p.read_bytes() for p in root.rglob("*")
                        if p.is_file() and not p.is_symlink())
    return out


def test_configmap_without_dockerfile_is_a_user_error(tmp_path: Path, kernel_61: str) -> None:
    files = docs.write(tmp_path / "m.yaml", docs.module("nodf", [
        {"literal": kernel_61, "containerImage": "localhost/x/nodf:1"}],
        build={"dockerfileConfigMap": {"name": "df"}}), docs.configmap("df", None))
    code, text = _run("module", "build", "-f", str(files), "--kernel", kernel_61)
    assert code == 2
    assert text.startswith("error: ") and "dockerfile" in text and "Traceback" not in text


def test_remote_digest_and_plan_against_the_auth_registry(built: Built, kernel_61: str,
                                                          auth_registry: AuthRegistry) -> None:
    """What the unit tests once faked: skopeo against a real registry with a password."""
    image = built.images[kernel_61]
    assert registry_host(image) == auth_registry.address
    digest = skopeo.remote_digest(image, tls_verify=False, authfile=built.auth)
    assert digest is not None and digest.startswith("sha256:")
    assert skopeo.remote_digest(image.rsplit(":", 1)[0] + ":missing", tls_verify=False,
                                authfile=built.auth) is None
    with pytest.raises(DtkError, match="refused the credentials"):
        skopeo.remote_digest(image, tls_verify=False)  # no credentials
    buildah.remove_image(image)  # the state must come from the registry
    code, data = _stdout_json(_run("module", "plan", "-f", str(built.files), "--kernel",
                                   kernel_61, "--kernel", "6.1.0-1-amd64", "--json"))
    assert code == 0, data
    states = {s["kernel"]: (s["state"], s["where"], s["digest"]) for s in data["states"]}
    assert states == {kernel_61: ("Exists", "registry", digest),
                      "6.1.0-1-amd64": ("NeedsBuilding", None, None)}


def test_render_pins_the_registry_digest(built: Built, kernel_61: str, kernel_61_rt: str,
                                         tmp_path: Path) -> None:
    out = tmp_path / "render.yaml"
    code, text = _run("module", "render", "-f", str(built.files), "--kernel", kernel_61,
                      "--kernel", kernel_61_rt, "-o", str(out))
    assert code == 0, text
    digests = {r["kernel"]: r["pushed"] for r in built.first["results"]}
    mappings = yaml.safe_load(out.read_text())["spec"]["moduleLoader"]["container"][
        "kernelMappings"]
    assert [(mp["literal"], mp["containerImage"].rsplit("@", 1)[1]) for mp in mappings] == \
        [(kernel_61, digests[kernel_61]), (kernel_61_rt, digests[kernel_61_rt])]
    code, text = _run("module", "render", "-f", str(built.files), "--kernel", "6.1.0-1-amd64")
    assert code == 2 and "run `dtk module build` first" in text


def test_plan_reports_an_image_nothing_can_make(tmp_path: Path, kernel_61: str) -> None:
    files = docs.write(tmp_path / "m.yaml", docs.module("nothing", [
        {"literal": kernel_61, "containerImage": f"localhost/kmmt-none/x:{kernel_61}"}]))
    code, text = _run("module", "plan", "-f", str(files), "--kernel", kernel_61,
                      "--kernel", "6.1.0-1-arm64")
    assert code == 1 and "Traceback" not in text
    assert f"error: {kernel_61}: image localhost/kmmt-none/x:{kernel_61} does not exist" in text
    assert "no mapping: 6.1.0-1-arm64 — KMM loads nothing there" in text


def test_sign_with_nothing_to_sign_fails_where_kmm_fails(tmp_path: Path,
                                                          kernel_61: str) -> None:
    """KMM admits a sign section without unsignedImage and without a build, then fails
    making the sign pod ("no image to sign given"): validate admits it, plan and build
    report that kernel as unable to sign."""
    keys = keygen.keygen(tmp_path, "dtk kmm nothing to sign")
    files = docs.write(tmp_path / "m.yaml", docs.module("nosrc", [
        {"literal": kernel_61, "containerImage": f"localhost/kmmt-nosrc/x:{kernel_61}"}],
        sign={"keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
              "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/kmm_ci_a.ko"]}),
        *docs.signing(keys.key, keys.cert_pem))
    code, text = _run("module", "validate", "-f", str(files))
    assert code == 0, text
    code, text = _run("module", "plan", "-f", str(files), "--kernel", kernel_61)
    assert code == 1 and "Traceback" not in text
    assert f"error: {kernel_61}: cannot sign: no image to sign given" in text, text
    code, data = _stdout_json(_run("module", "build", "-f", str(files), "--kernel", kernel_61,
                                   "--json"))
    assert code == 1, data
    (r,) = data["results"]
    assert r["action"] == "failed", r
    assert r["reason"].startswith("signing failed: no image to sign given (the sign section "
                                  "has no unsignedImage and there is no build)"), r
    assert not buildah.image_exists(f"localhost/kmmt-nosrc/x:{kernel_61}")


def test_check_sign_and_vmtest_pull_registry_only_images(built: Built, kernel_61: str) -> None:
    image = built.images[kernel_61]
    reg = ("--no-tls-verify", "--authfile", str(built.auth))
    signed = f"localhost/kmmt-resigned/x:{kernel_61}"
    try:
        buildah.remove_image(image)
        code, text = _run("check", image, "--kernel", kernel_61, *reg)
        assert code == 0, text
        assert "kmm_ci_a.ko on " in text and "loads" in text
        buildah.remove_image(image)
        code, text = _run("sign", "--unsigned-image", image, "--kernel", kernel_61,
                          "--files-to-sign", "/opt/lib/modules/$KERNEL_FULL_VERSION/*.ko",
                          "--key", str(built.keys.key), "--cert", str(built.keys.cert_pem),
                          "-o", signed, *reg)
        assert code == 0, text
        assert "2 module(s) signed" in text
        buildah.remove_image(image)
        code, text = _run("vmtest", image, "--kernel", kernel_61, "--module", "kmm_ci_a", *reg)
        assert code == 0, text
        code, text = _run("check", image.rsplit(":", 1)[0] + ":nope", "--kernel", kernel_61,
                          "--no-tls-verify")  # no credentials: the registry refuses
        assert code == 2 and "refused the credentials" in text, text
    finally:
        _cleanup(signed)


def test_failed_signing_never_publishes_the_unsigned_build(
        tmp_path: Path, registry: str, kernel_61: str, toolkit_61: Any) -> None:
    """KMM writes containerImage only with the signed result (its build went to an
    intermediate name); a Module that gains a sign section is not satisfied by an image
    built without it."""
    del toolkit_61
    keys = keygen.keygen(tmp_path, "dtk kmm sign-fails")
    image = f"{registry}/kmmt-{secrets.token_hex(4)}/sf:{kernel_61}"
    good = "/opt/lib/modules/${KERNEL_FULL_VERSION}/kmm_ci_a.ko"

    def manifests(sign: list[str] | None) -> str:
        extra = {} if sign is None else {"sign": {
            "keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
            "filesToSign": sign}}
        return str(docs.write(tmp_path / "m.yaml", docs.module(
            "sf", [{"literal": kernel_61, "containerImage": image}],
            build={"dockerfileConfigMap": {"name": "df"}}, registryTLS={"insecure": True},
            **extra), docs.configmap("df", docs.DOCKERFILE),
            *docs.signing(keys.key, keys.cert_pem)))

    def build(sign: list[str] | None) -> tuple[int, dict[str, Any]]:
        code, data = _stdout_json(_run("module", "build", "-f", manifests(sign), "--kernel",
                                       kernel_61, "--push", "--json"))
        (result,) = data["results"]
        return code, result

    def state(sign: list[str] | None) -> str:
        code, data = _stdout_json(_run("module", "plan", "-f", manifests(sign), "--kernel",
                                       kernel_61, "--json"))
        assert code == 0, data
        return str(data["states"][0]["state"])

    try:
        for _ in range(2):  # the second run must not take the unsigned build for done
            code, r = build(["/opt/lib/modules/${KERNEL_FULL_VERSION}/absent.ko"])
            assert code == 1 and r["action"] == "failed", r
            assert "sign" in r["reason"] and r["pushed"] == ""
            assert not buildah.image_exists(image)
            assert skopeo.remote_inspect(image, tls_verify=False) is None
        code, r = build(None)
        assert (code, r["action"]) == (0, "built"), r
        assert (state(None), state([good])) == ("Exists", "NeedsBuilding")
        code, r = build([good])  # gains a sign section: the unsigned image does not count
        assert (code, r["action"]) == (0, "built+signed"), r
        remote = skopeo.remote_inspect(image, tls_verify=False)
        assert remote is not None and r["pushed"] == remote["Digest"]
        modules = read_modules(image, cert=load_cert(keys.cert_pem))
        trust = {i.module.path.rsplit("/", 1)[-1]: i.trust
                 for group in modules.values() for i in group}
        assert trust == {"kmm_ci_a.ko": SignatureTrust.TRUSTED,
                         "kmm_ci_b.ko": SignatureTrust.UNSIGNED}
        code, r = build([good])
        assert (code, r["action"]) == (0, "exists"), r
        assert state([good]) == "Exists"
    finally:
        _cleanup(image, module="sf")


# KMM's worker copies <dirName>/lib/modules/<kernel> out of the image with the image's
# own sh, mkdir and cp, and loads with the modprobe of its own image: a kmod image with
# another dirName and no modprobe is one KMM loads (internal/worker, workerpodmanager.go).
DIRNAME_DOCKERFILE = docs.DOCKERFILE.replace(
    "COPY --from=builder /src/*.ko /opt/lib/modules/${KERNEL_VERSION}/",
    "COPY --from=builder /src/*.ko /drivers/lib/modules/${KERNEL_VERSION}/").replace(
    "RUN depmod -b /opt",
    "RUN depmod -b /drivers ${KERNEL_VERSION} && rm -f /bin/modprobe /sbin/modprobe "
    "/usr/bin/modprobe /usr/sbin/modprobe")


def test_dir_name_and_no_modprobe_as_kmm_loads_them(tmp_path: Path, kernel_61: str,
                                                    toolkit_61: Any) -> None:
    del toolkit_61
    image = f"localhost/kmmt-{secrets.token_hex(4)}/dirname:{kernel_61}"
    module = docs.module("dirname", [{"literal": kernel_61, "containerImage": image}],
                         build={"dockerfileConfigMap": {"name": "df"}})
    module["spec"]["moduleLoader"]["container"]["modprobe"]["dirName"] = "/drivers"
    files = docs.write(tmp_path / "m.yaml", module, docs.configmap("df", DIRNAME_DOCKERFILE))
    try:
        code, data = _stdout_json(_run("module", "build", "-f", str(files), "--kernel",
                                       kernel_61, "--json"))
        (r,) = data["results"]
        assert (code, r["action"]) == (0, "built"), r
        modules = read_modules(image, base="/drivers/lib/modules")
        assert sorted(i.module.path.rsplit("/", 1)[-1] for group in modules.values()
                      for i in group) == ["kmm_ci_a.ko", "kmm_ci_b.ko"]
        # Preflight reads the same dirName: dtk check, then a boot that loads it.
        code, data = _stdout_json(_run("module", "preflight", "-f", str(files), "--kernel",
                                       kernel_61, "--json"))
        (status,) = data["modules"]
        assert (code, status["verification_status"]) == (0, "Success"), status
        assert any(line.startswith(f"/drivers/lib/modules/{kernel_61}/") and
                   line.endswith(": loads") for line in status["check"]), status
    finally:
        _cleanup(image)


def test_module_vmtest_under_secure_boot_enrols_the_modules_certificate(
        built: Built, kernel_61: str, tmp_path: Path) -> None:
    """--secure-boot: the signed kernel through OVMF, shim and GRUB, the certificate of the
    Module's certSecret enrolled as a MOK (as on the nodes it is for): the signed image
    loads. With another certificate enrolled instead, the kernel refuses it."""
    _patch_spec(built.files)
    code, data = _stdout_json(_run("module", "vmtest", "-f", str(built.files), "--kernel",
                                   kernel_61, "--secure-boot", "--json"))
    assert code == 0, data
    (r,) = data
    assert r["verdict"] == "loaded", r
    assert r["boot"]["secure_boot"] == "on" and r["boot"]["enrolment"] == "offline", r
    assert r["boot"]["sig_enforce"] == "Y", r
    other = keygen.keygen(tmp_path / "other", "not the Module's key")
    code, data = _stdout_json(_run("module", "vmtest", "-f", str(built.files), "--kernel",
                                   kernel_61, "--enrol", str(other.cert_pem), "--json"))
    assert code == 1, data
    (r,) = data
    assert r["verdict"] == "refused", r
    assert "Loading of module with unavailable key is rejected" in r["reason"], r


def test_a_module_for_kmms_sign_in_place_flow_works_unchanged(
        built: Built, kernel_61: str, tmp_path: Path, auth_registry: AuthRegistry) -> None:
    """Since KMM 9d626f4 the build pod pushes the unsigned image to containerImage and the
    sign pod overwrites it in place. A registry KMM left between the two (the unsigned
    build under the final name) and the Module written for that flow: dtk validates and
    plans it unchanged (the unsigned image is not taken for done: no sign label), builds
    and signs it into containerImage, and renders the signed digest."""
    image = f"{auth_registry.address}/kmmt-{secrets.token_hex(4)}/inplace:${{KERNEL_FULL_VERSION}}"
    all_docs = list(yaml.safe_load_all(built.files.read_text()))
    cont = all_docs[0]["spec"]["moduleLoader"]["container"]
    cont["kernelMappings"] = [{"literal": kernel_61, "containerImage": image}]
    signing = cont.pop("sign")
    unsigned = docs.write(tmp_path / "build-only.yaml", *all_docs)
    cont["sign"] = signing
    module = docs.write(tmp_path / "module.yaml", *all_docs)
    final = image.replace("${KERNEL_FULL_VERSION}", kernel_61)
    try:
        # KMM's build pod: the unsigned build pushed to containerImage
        code, text = _run("module", "build", "-f", str(unsigned), "--kernel", kernel_61,
                          "--push")
        assert code == 0, text
        left = skopeo.remote_digest(final, tls_verify=False, authfile=built.auth)
        assert left is not None
        code, text = _run("module", "validate", "-f", str(module))
        assert code == 0, text
        code, plan = _stdout_json(_run("module", "plan", "-f", str(module), "--kernel",
                                       kernel_61, "--json"))
        assert code == 0, plan
        (state,) = plan["states"]  # found, and not taken for done: no sign label
        assert state["state"] == "NeedsBuilding" and state["digest"], state
        code, data = _stdout_json(_run("module", "build", "-f", str(module), "--kernel",
                                       kernel_61, "--push", "--json"))
        assert code == 0, data
        (result,) = data["results"]
        assert result["action"] == "built+signed", result
        signed = skopeo.remote_digest(final, tls_verify=False, authfile=built.auth)
        assert signed not in (None, left) and result["pushed"] == signed
        buildah.remove_image(final)  # what the registry holds, not the local copy
        skopeo.ensure_local(final, tls_verify=False, authfile=built.auth)
        modules = read_modules(final, cert=keygen_cert(built))
        assert {i.trust for group in modules.values() for i in group} == \
            {SignatureTrust.TRUSTED}
        out = tmp_path / "render.yaml"
        code, text = _run("module", "render", "-f", str(module), "--kernel", kernel_61,
                          "-o", str(out))
        assert code == 0, text
        rendered = yaml.safe_load(out.read_text())["spec"]["moduleLoader"]["container"]
        assert rendered["kernelMappings"][0]["containerImage"] == \
            f"{final.rsplit(':', 1)[0]}@{signed}"
    finally:
        _cleanup(final, module="kmm-ci")
