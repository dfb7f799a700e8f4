"""`dtk node` on a host root made of the real linux-image package, with real images:
the example driver built by `dtk build`, saved by skopeo as an OCI archive and
pushed to a loopback registry that wants credentials.

Loading modules needs a kernel with module support, which this host lacks; the
load plan is checked here and the load itself in the VM node test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtk.distro import debfile
from dtk.distro.debian import DebianArchive
from dtk.engine import buildah, skopeo
from dtk.kernel import bzimage, installed, normalize
from dtk.kernel.symvers import parse as parse_symvers
from dtk.node import declare, hostkeys, prepare
from dtk.node.layout import Layout
from dtk.node.load import plan_load
from dtk.node.verify import with_in_tree_exports
from dtk.toolkit.images import ToolkitImage
from tests.integration.conftest import AuthRegistry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples/dtk-example/Containerfile"


def dtk(*args: str, root: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DTK_NODE_ROOT=str(root))
    proc = subprocess.run([sys.executable, "-m", "dtk", "node", *args], capture_output=True,
                          text=True, env=env, timeout=900, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def dtk_json(*args: str, root: Path) -> Any:
    return json.loads(dtk(*args, "--json", root=root).stdout)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, toolkit_61: ToolkitImage,
           kernel_61: str, kernel_61_old: str, archive: DebianArchive
           ) -> Iterator[dict[str, Path]]:
    """OCI archives: the example built for kernel_61; crc7 from the oldest 6.1 ABI's
    package laid out for kernel_61 (depmod'ed); an image without modules."""
    del toolkit_61
    work = tmp_path_factory.mktemp("node-images")
    debfile.fetch_unpacked(archive.index, [f"linux-image-{kernel_61_old}"], work / "old",
                           work / "debs")
    (crc7,) = (work / "old/lib/modules" / kernel_61_old).rglob("crc7.ko*")
    prefix = f"localhost/dtk-node-{secrets.token_hex(4)}"
    example = f"{prefix}/dtk-example:{kernel_61}"
    env = dict(os.environ, DTK_STATE_DIR=str(work / "state"))
    made = [example]
    try:
        subprocess.run([sys.executable, "-m", "dtk", "build", "-f", str(EXAMPLE), "--kernel",
                        kernel_61, "--image", example], check=True, env=env, timeout=1800,
                       capture_output=True)
        other = work / "other"
        (other / f"opt/lib/modules/{kernel_61}/extra").mkdir(parents=True)
        shutil.copy(crc7, other / f"opt/lib/modules/{kernel_61}/extra/{crc7.name}")
        subprocess.run(["depmod", "-b", str(other / "opt"), kernel_61], check=True)
        (work / "empty/etc").mkdir(parents=True)
        (work / "empty/etc/hostname").write_text("x\n")
        out = {"example": work / "example.tar"}
        for name, tree in (("other-abi", other), ("empty", work / "empty")):
            tag = f"{prefix}/{name}:1"
            made.append(tag)
            with buildah.working_container("scratch") as ctr:
                ctr.copy_in(tree, "/")
                ctr.commit(tag)
            out[name] = work / f"{name}.tar"
        for name, path in out.items():
            tag = example if name == "example" else f"{prefix}/{name}:1"
            subprocess.run(["skopeo", "copy", f"containers-storage:{tag}",
                            f"oci-archive:{path}"], check=True, capture_output=True)
        yield out
    finally:
        for tag in made:
            subprocess.run(["buildah", "rmi", tag], capture_output=True, check=False)


def build_dkms(work: Path, package: str, kernels: tuple[str, ...]) -> dict[str, Path]:
    """A Debian `*-dkms` package (a real out-of-tree driver) built by `dtk build --dkms` for
    `kernels`, as OCI archives per kernel: its image links /opt/lib/modules/K/host ->
    /host/lib/modules/K, the way KMM's upstream documentation tells image authors
    (KMM@d8e8410), for the in-tree modules it needs."""
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}"
    env = dict(os.environ, DTK_STATE_DIR=str(work / "state"))
    kernel_args = [a for k in kernels for a in ("--kernel", k)]
    built = subprocess.run([sys.executable, "-m", "dtk", "build", "--dkms", package,
                            *kernel_args, "--image", tag, "--json"], env=env, timeout=3600,
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    out = {}
    for cell in json.loads(built.stdout)["outcomes"]:
        path = work / f"{package}-{normalize(cell['kernel'])}.tar"
        subprocess.run(["skopeo", "copy", f"containers-storage:{cell['image']}",
                        f"oci-archive:{path}"], check=True, capture_output=True)
        subprocess.run(["buildah", "rmi", cell["image"]], capture_output=True, check=False)
        out[cell["kernel"]] = path
    return out


def from_archive(archive_file: Path) -> str:
    """The archive in container storage under a fresh tag (the caller removes it)."""
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/from-archive:1"
    subprocess.run(["skopeo", "copy", f"oci-archive:{archive_file}",
                    f"containers-storage:{tag}"], check=True, capture_output=True)
    return tag


def to_archive(tag: str, out: Path) -> Path:
    """`tag` saved as an OCI archive at `out`, and removed from container storage."""
    subprocess.run(["skopeo", "copy", f"containers-storage:{tag}", f"oci-archive:{out}"],
                   check=True, capture_output=True)
    subprocess.run(["buildah", "rmi", tag], capture_output=True, check=False)
    return out


def midstream_layout(work: Path, upstream: Path, host_root: Path, kernel: str) -> Path:
    """The same driver laid out as KMM's midstream documentation does it (61821fde): the
    kernel's own modules copied into the final stage (here the media ones videodev needs)
    and `depmod -b /opt` run there, so no `host` link is needed."""
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/midstream:1"
    source = from_archive(upstream)
    with buildah.working_container(source) as ctr:
        with ctr.mounted() as root:
            moddir = root / f"opt/lib/modules/{kernel}"
            (moddir / "host").unlink()
            media = host_root / f"lib/modules/{kernel}/kernel/drivers/media"
            for sub in ("v4l2-core", "mc"):
                shutil.copytree(media / sub, moddir / f"kernel/drivers/media/{sub}")
            subprocess.run(["depmod", "-b", str(root / "opt"), kernel], check=True)
        ctr.commit(tag)
    subprocess.run(["buildah", "rmi", source], capture_output=True, check=False)
    return to_archive(tag, work / "midstream.tar")


@pytest.fixture(scope="module")
def v4l2(tmp_path_factory: pytest.TempPathFactory, toolkit_61: ToolkitImage, kernel_61: str,
         host: Path) -> dict[str, Path]:
    """Debian's v4l2loopback-dkms for kernel_61 (its module needs the in-tree videodev,
    which needs mc): "upstream" (KMM's host link) and "midstream" (the kernel's modules
    copied in)."""
    del toolkit_61
    work = tmp_path_factory.mktemp("node-v4l2")
    upstream = build_dkms(work, "v4l2loopback-dkms", (kernel_61,))[kernel_61]
    return {"upstream": upstream,
            "midstream": midstream_layout(work, upstream, host, kernel_61)}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, archive: DebianArchive,
         kernel_61: str) -> Path:
    """A host root holding kernel_61 as its package installs it (no headers)."""
    root = tmp_path_factory.mktemp("node-host")
    debfile.fetch_unpacked(archive.index, [f"linux-image-{kernel_61}"], root,
                           tmp_path_factory.mktemp("debs"))
    # What the package's postinst does before it runs the /etc/kernel/postinst.d hooks.
    subprocess.run(["depmod", "-b", str(root), kernel_61], check=True, timeout=600)
    return root


def fresh_root(tmp_path: Path, host: Path) -> Path:
    """A node root sharing the host's kernel files (read only) through bind-free links:
    /boot and /lib/modules are the unpacked package's, copied by hard link."""
    root = tmp_path / "node"
    for part in ("boot", "lib"):
        if (host / part).exists():
            shutil.copytree(host / part, root / part, copy_function=os.link, symlinks=True)
    return root


def test_prepare_an_oci_archive_for_the_host_kernel(tmp_path: Path, host: Path,
                                                     images: dict[str, Path],
                                                     kernel_61: str) -> None:
    root = fresh_root(tmp_path, host)
    dtk("add", f"oci-archive:{images['example']}", "--module", "dtk_example",
        "--kernel", kernel_61, root=root)
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert outcome["ready"], outcome
    assert [m["module"] for m in outcome["modules"]] == ["dtk_example"]
    tree = root / "var/lib/dtk" / outcome["tree"]
    assert (tree / f"opt/lib/modules/{kernel_61}/extra/dtk_example.ko").is_file()
    assert (tree / f"opt/lib/modules/{kernel_61}/modules.dep.bin").is_file()
    assert not (tree / "bin").exists()  # only what KMM's worker copies out
    (status,) = dtk_json("status", "--kernel", kernel_61, root=root)
    assert status["ready"] and status["digest"] == outcome["digest"]
    text = dtk("status", "--kernel", kernel_61, root=root).stdout
    assert "dtk-example" in text and " yes " in text
    # What the boot unit would run (this host cannot load modules: the VM test does).
    layout = Layout(root)
    decl = declare.find(layout, "dtk-example")
    recorded = prepare.recorded(layout, kernel_61, decl.name)
    assert recorded is not None
    conf = root / f"var/lib/dtk/kernels/{kernel_61}/dtk-example.modprobe.d"
    assert plan_load(layout, decl, recorded, ())[-1].argv == (
        "modprobe", "-C", str(conf), "-vd", str(tree / "opt"), "dtk_example")
    assert (root / "etc/systemd/system/sysinit.target.wants/dtk-node.service").is_symlink()
    # The kernel's package removed: its state goes; remove: everything of dtk's goes.
    dtk("clean", "--kernel", kernel_61, root=root)
    assert not (root / "var/lib/dtk/kernels" / kernel_61).exists()
    assert not list((root / "var/lib/dtk/trees").iterdir())
    assert not list((root / "var/lib/dtk/oci/blobs/sha256").iterdir())
    dtk("remove", "dtk-example", root=root)
    assert list((root / "etc/dtk/modules").iterdir()) == []
    assert list((root / "var/lib/dtk").iterdir()) == []


def test_an_image_for_another_abi_is_refused_with_the_kernels_reason(
        tmp_path: Path, host: Path, images: dict[str, Path], kernel_61: str) -> None:
    """The kernel's words for it (GUIDE: a 6.1.0-47 module on 6.1.0-56 'disagrees about
    version of symbol module_layout'); prepare still exits 0, --strict does not."""
    root = fresh_root(tmp_path, host)
    dtk("add", f"oci-archive:{images['other-abi']}", "--module", "crc7", "--kernel", kernel_61,
        root=root)
    proc = dtk("prepare", "--kernel", kernel_61, root=root)
    assert "crc7 for" in proc.stdout and "NOT READY" in proc.stdout
    assert "disagrees about version of symbol" in proc.stdout
    strict = dtk("prepare", "--kernel", kernel_61, "--strict", root=root, check=False)
    assert strict.returncode == 1


def test_bad_images_are_clear_reasons(tmp_path: Path, host: Path, images: dict[str, Path],
                                      kernel_61: str) -> None:
    root = fresh_root(tmp_path, host)
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(images["example"].read_bytes()[:4096])
    for name, image in (("empty", images["empty"]), ("corrupt", corrupt)):
        dtk("add", f"oci-archive:{image}", "--module", name, "--kernel", kernel_61, root=root)
    by_name = {o["name"]: o for o in dtk_json("prepare", "--kernel", kernel_61, root=root)}
    assert not by_name["empty"]["ready"]
    assert "not a driver image" in by_name["empty"]["reason"]
    assert not by_name["corrupt"]["ready"]
    assert "fetching oci-archive:" in by_name["corrupt"]["reason"]
    assert not list((root / "var/lib/dtk/trees").glob(".unpack-*"))


def test_require_signature_fetches_only_under_a_policy_that_demands_one(
        tmp_path: Path, host: Path, images: dict[str, Path], kernel_61: str) -> None:
    """`add --require-signature`: under a policy that accepts anything (Debian's default)
    nothing is fetched; under one that rejects the archive, skopeo refuses it by the
    node's policy (this machine's own accepts anything)."""
    root = fresh_root(tmp_path, host)
    source = f"oci-archive:{images['example']}"
    dtk("add", source, "--module", "dtk_example", "--require-signature",
        "--kernel", kernel_61, root=root)
    (listed,) = dtk_json("list", root=root)
    assert listed["requireSignature"] is True
    policy_file = root / "etc/containers/policy.json"
    policy_file.parent.mkdir(parents=True)
    accept = [{"type": "insecureAcceptAnything"}]
    policy_file.write_text(json.dumps({"default": accept}))
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert not outcome["ready"]
    assert f"would accept {source} unsigned" in outcome["reason"], outcome
    assert not (root / "var/lib/dtk/oci").exists()
    policy_file.write_text(json.dumps({"default": accept, "transports": {
        "oci-archive": {str(images["example"].parent): [{"type": "reject"}]}}}))
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert not outcome["ready"]
    assert "rejected by policy" in outcome["reason"], outcome
    assert not list((root / "var/lib/dtk/oci").glob("blobs/sha256/*"))
    # Declared again without it (--replace): the same node takes the unsigned archive.
    dtk("add", source, "--module", "dtk_example", "--replace", "--kernel", kernel_61,
        root=root)
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert outcome["ready"], outcome


def test_a_registry_image_with_credentials_is_pinned(tmp_path: Path, host: Path,
                                                     images: dict[str, Path], kernel_61: str,
                                                     auth_registry: AuthRegistry) -> None:
    root = fresh_root(tmp_path, host)
    repo = f"{auth_registry.address}/node-{secrets.token_hex(4)}/dtk-example"
    auth = tmp_path / "auth.json"
    auth.write_text(auth_registry.dockerconfigjson())
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-authfile", str(auth),
                    f"oci-archive:{images['example']}", f"docker://{repo}:{kernel_61}"],
                   check=True, capture_output=True)
    digest = skopeo.remote_digest(f"{repo}:{kernel_61}", tls_verify=False, authfile=auth)
    module = tmp_path / "module.yaml"
    module.write_text(f"""\
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {{name: example, namespace: default}}
spec:
  selector: {{}}
  imageRepoSecret: {{name: pull}}
  moduleLoader:
    container:
      modprobe: {{moduleName: dtk_example}}
      registryTLS: {{insecure: true}}
      kernelMappings:
      - regexp: '^.+$'
        containerImage: '{repo}:${{KERNEL_FULL_VERSION}}'
---
apiVersion: v1
kind: Secret
metadata: {{name: pull, namespace: default}}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{auth_registry.dockerconfigjson()}'
""")
    dtk("add", "-f", str(module), "--kernel", kernel_61, root=root)
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert outcome["ready"], outcome
    assert outcome["pinned"] == digest
    pins = json.loads((root / "var/lib/dtk/pins.json").read_text())
    assert list(pins) == ["example"]
    assert pins["example"][f"{repo}:{kernel_61}"]["digest"] == digest
    assert auth_registry.password not in json.dumps(outcome)
    # Credentials the registry refuses: a clear reason, and no secret in it.
    wrong = module.read_text().replace(auth_registry.dockerconfigjson(),
                                       auth_registry.dockerconfigjson("wrong"))
    module.write_text(wrong.replace("name: example,", "name: refused,"))
    dtk("add", "-f", str(module), "--kernel", kernel_61, root=root)
    by_name = {o["name"]: o for o in dtk_json("prepare", "--kernel", kernel_61, root=root)}
    assert by_name["example"]["ready"]
    assert not by_name["refused"]["ready"]
    assert "refused the credentials" in by_name["refused"]["reason"], by_name["refused"]
    assert "wrong" not in json.dumps(by_name["refused"])


def test_exports_from_the_kernel_image_agree_with_module_symvers(
        host: Path, toolkit_61: ToolkitImage, kernel_61: str) -> None:
    """A host without headers reads vmlinux's exports and CRCs from /boot/vmlinuz-K;
    the kernel build's own Module.symvers (in the toolkit's headers) is the reference."""
    vmlinux = bzimage.extract_vmlinux((host / f"boot/vmlinuz-{kernel_61}").read_bytes())
    found = installed.vmlinux_exports(vmlinux, "vmlinuz")
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        symvers = (root / f"usr/src/linux-headers-{kernel_61}/Module.symvers").read_text()
    table = parse_symvers(symvers)
    reference = {n: s for n, s in table.items() if s.module == "vmlinux"}
    assert len(reference) > 5000
    assert found == reference
    # In-tree modules' exports, read from the modules a driver depends on (videodev,
    # which v4l2loopback needs) and what they depend on (mc), as Module.symvers has them.
    facts = installed.for_installed(host, kernel_61)
    extended = with_in_tree_exports(facts, host, ["videodev"])
    added = {n: s for n, s in extended.symbols.items() if n not in facts.symbols}
    owners = {s.module_name for s in added.values()}
    assert owners == {"videodev", "mc"}
    assert added == {n: s for n, s in table.items() if s.module_name in owners}


def show_depends(root: Path, tree: str, kernel: str, module: str) -> list[Path]:
    """What kmod's own modprobe would insmod for `module` from the prepared tree, as the
    boot unit runs it (`-d TREE/opt`, dtk's configuration) on the node: the real
    resolver, asked without loading anything, in a mount namespace (bubblewrap) where
    /lib/modules and /var/lib/dtk are the node's (this host has no /lib/modules)."""
    conf = f"/var/lib/dtk/kernels/{kernel}/none.modprobe.d"
    (root / conf.lstrip("/")).mkdir(parents=True, exist_ok=True)
    shown = subprocess.run(
        ["bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
         "--symlink", "usr/sbin", "/sbin", "--symlink", "usr/lib64", "/lib64", "--dir", "/lib",
         "--ro-bind", "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
         "--ro-bind", str(root / "lib/modules"), "/lib/modules",
         "--ro-bind", str(root / "var/lib/dtk"), "/var/lib/dtk", "--proc", "/proc",
         "--dev", "/dev", "--", "modprobe", "-C", conf, "-d", f"/var/lib/dtk/{tree}/opt",
         "-S", kernel, "--show-depends", module],
        capture_output=True, text=True, check=True)
    assert "ERROR" not in shown.stderr, shown.stderr
    return [Path(line.split()[1]) for line in shown.stdout.splitlines()
            if line.startswith("insmod ")]


def in_node(root: Path, path: Path) -> Path:
    """A path as the node sees it, on this host: the node's /lib/modules is under root;
    every link on the way is the tree's own, or dtk's `host` link to /lib/modules/K."""
    node = Path(os.path.realpath(root / path.relative_to("/")))
    if node.is_relative_to(root):
        return node
    # dtk's host link, absolute in the node's terms: followed under the node's root.
    rel = path.relative_to("/")
    parts = rel.parts
    index = parts.index("host")
    link = root.joinpath(*parts[:index + 1]).readlink()
    return root / link.relative_to("/") / Path(*parts[index + 1:])


def test_in_tree_dependencies_resolve_as_kmms_worker_sees_them(
        tmp_path: Path, host: Path, v4l2: dict[str, Path], kernel_61: str) -> None:
    """Both layouts KMM's documentation gives image authors load their in-tree
    dependency (videodev, then mc): the upstream image's `host` link reaches this host's
    /lib/modules/K, the midstream image carries the modules itself. kmod's modprobe
    --show-depends, on the tree prepare left, names files that exist and are what dtk
    checked: the host's own videodev for upstream."""
    root = fresh_root(tmp_path, host)
    for name, image in v4l2.items():
        dtk("add", f"oci-archive:{image}", "--module", "v4l2loopback", "--name", name,
            "--kernel", kernel_61, root=root)
    outcomes = {o["name"]: o for o in dtk_json("prepare", "--kernel", kernel_61, root=root)}
    kernel_modules = root / f"lib/modules/{kernel_61}"
    for name, outcome in outcomes.items():
        assert outcome["ready"], outcome
        insmods = show_depends(root, outcome["tree"], kernel_61, "v4l2loopback")
        assert [p.name.split(".ko")[0] for p in insmods] == ["mc", "videodev", "v4l2loopback"]
        on_node = [in_node(root, p) for p in insmods]
        assert all(p.is_file() for p in on_node), on_node
        from_kernel = [p.is_relative_to(kernel_modules) for p in on_node[:2]]
        assert from_kernel == ([True, True] if name == "upstream" else [False, False]), on_node


def test_an_image_whose_dependency_does_not_resolve_is_not_ready(
        tmp_path: Path, host: Path, v4l2: dict[str, Path], kernel_61: str) -> None:
    """The upstream image without its `host` link: modules.dep.bin still names
    host/kernel/drivers/media/…, which would not open at boot (`Unknown symbol
    video_ioctl2`): not ready, before the reboot."""
    work = tmp_path / "broken"
    work.mkdir()
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/nohost:1"
    source = from_archive(v4l2["upstream"])
    with buildah.working_container(source) as ctr:
        with ctr.mounted() as mounted:
            (mounted / f"opt/lib/modules/{kernel_61}/host").unlink()
        ctr.commit(tag)
    subprocess.run(["buildah", "rmi", source], capture_output=True, check=False)
    archive_file = to_archive(tag, work / "nohost.tar")
    root = fresh_root(tmp_path, host)
    dtk("add", f"oci-archive:{archive_file}", "--module", "v4l2loopback", "--kernel", kernel_61,
        root=root)
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert not outcome["ready"], outcome
    assert "host/kernel/drivers/media/" in outcome["reason"], outcome
    assert "not in the image" in outcome["reason"], outcome


def firmware_keys(root: Path, moks: list[bytes]) -> None:
    """The host's firmware variables as efivarfs presents them under Secure Boot (this
    host booted without UEFI: the VM tests read a real firmware's), and lockdown as
    Debian's kernel sets it."""
    efivars = root / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True, exist_ok=True)
    (efivars / f"SecureBoot-{hostkeys.EFI_GLOBAL}").write_bytes(b"\x06\x00\x00\x00\x01")
    lists = b""
    for der in moks:
        entry = uuid.UUID(hostkeys.SHIM).bytes_le + der
        lists += struct.pack("<16sIII", hostkeys.CERT_X509.bytes_le, 28 + len(entry), 0,
                             len(entry)) + entry
    (efivars / f"MokListRT-{hostkeys.SHIM}").write_bytes(b"\x06\x00\x00\x00" + lists)
    security = root / "sys/kernel/security"
    security.mkdir(parents=True, exist_ok=True)
    (security / "lockdown").write_text("none [integrity] confidentiality\n")


@pytest.fixture(scope="module")
def signed_example(tmp_path_factory: pytest.TempPathFactory, images: dict[str, Path],
                   kernel_61: str) -> dict[str, Path]:
    """The example driver signed by `dtk sign` (KMM's sign step) with a key of dtk
    keygen's: the archive, and the key's certificate (DER)."""
    work = tmp_path_factory.mktemp("node-signed")
    subprocess.run([sys.executable, "-m", "dtk", "keygen", "--dir", str(work / "keys"),
                    "--cn", "Node test MOK"], check=True, capture_output=True)
    source = from_archive(images["example"])
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/signed:1"
    try:
        subprocess.run([sys.executable, "-m", "dtk", "sign", "--unsigned-image", source,
                        "--kernel", kernel_61, "--files-to-sign",
                        "/opt/lib/modules/${KERNEL_FULL_VERSION}/extra/*.ko",
                        "--key", str(work / "keys/signing_key.pem"),
                        "--cert", str(work / "keys/signing_cert.pem"), "-o", tag],
                       check=True, capture_output=True, timeout=600)
    finally:
        subprocess.run(["buildah", "rmi", source], capture_output=True, check=False)
    return {"archive": to_archive(tag, work / "signed.tar"),
            "cert": work / "keys/signing_cert.der"}


def test_a_mok_signed_module_is_ready_under_secure_boot_once_its_key_is_enrolled(
        tmp_path: Path, host: Path, signed_example: dict[str, Path], kernel_61: str) -> None:
    """Lockdown on (Debian under Secure Boot): a module signed with a key the host has not
    enrolled is NOT READY, naming its signer and the fix; once the key is in MokListRT
    (the .machine keyring), or declared with --cert where the firmware cannot be read, it
    is ready."""
    root = fresh_root(tmp_path, host)
    firmware_keys(root, [])
    dtk("add", f"oci-archive:{signed_example['archive']}", "--module", "dtk_example",
        "--kernel", kernel_61, root=root)
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert not outcome["ready"], outcome
    assert "signed by 'Node test MOK' (serial " in outcome["reason"], outcome  # sign-file
    assert "dtk node enroll CERT" in outcome["reason"], outcome
    der = signed_example["cert"].read_bytes()
    firmware_keys(root, [der])
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert outcome["ready"], outcome
    keys = dtk_json("keys", root=root)
    assert keys["secureBoot"] and keys["lockdown"]
    assert [k.split(" (key id")[0] for k in keys["moks"]] == ["'Node test MOK'"]
    # No firmware variables to read: the declaration names the certificate.
    shutil.rmtree(root / "sys/firmware")
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert not outcome["ready"], outcome
    dtk("add", f"oci-archive:{signed_example['archive']}", "--module", "dtk_example",
        "--replace", "--cert", str(signed_example["cert"]), "--kernel", kernel_61, root=root)
    (outcome,) = dtk_json("prepare", "--kernel", kernel_61, root=root)
    assert outcome["ready"], outcome
