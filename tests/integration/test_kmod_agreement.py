"""`dtk check` against the real kernel's verdict: every cell of a cross matrix is booted.

Driver images are built for the newest 6.1 and 6.12 standard kernels; each is
checked statically and then loaded by `dtk vmtest` (qemu, KMM's worker steps)
on kernels it was and was not built for: standard, older ABI, RT and cloud of
both lines. Check and boot must agree on every cell.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtk import kernel as kern
from dtk import rootfs
from dtk import run as runner
from dtk.distro.debian import DebianArchive
from dtk.engine import buildah
from dtk.kernel import keyring
from dtk.kernel.verdict import Verdict
from dtk.kmod import check as chk
from dtk.kmod import elf, keygen, sign
from dtk.kmod.image import read_image_index
from dtk.kmod.targets import check_target
from dtk.toolkit import locate
from dtk.toolkit.images import ToolkitImage, ensure_toolkit
from dtk.vm.guest import GuestConfig
from dtk.vm.vmtest import VmResult, VmTestSpec, vmtest

from .test_kmod_check import compile_example

DATA = Path(__file__).parent.parent / "data" / "kmod"

pytestmark = pytest.mark.integration


def driver_image(ko: Path, release: str, extra: dict[str, Path] | None = None,
                 depmod: tuple[str, ...] = ("depmod",)) -> str:
    """A KMM-layout driver image: the module under /opt/lib/modules/<K>/ and depmod's index
    (`extra`: more files, by path under /opt/lib/modules/<K>/; `depmod`: which depmod,
    kmod's by default, ("busybox", "depmod") for the text-only index)."""
    name = f"localhost/dtk-test-agree-{uuid.uuid4().hex[:8]}:{release.replace('+', '_')}"
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(ko, f"/opt/lib/modules/{release}/extra/{ko.name}")
        for rel, host in (extra or {}).items():
            ctr.copy_in(host, f"/opt/lib/modules/{release}/{rel}")
        with ctr.mounted() as root:
            runner.run([*depmod, "-b", str(root / "opt"), release], timeout=120)
        ctr.commit(name)
    return name


@pytest.fixture(scope="module")
def images(toolkit_61: ToolkitImage, toolkit_612: ToolkitImage, kernel_61: str,
           kernel_612: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, tuple[str, Path]]]:
    out = tmp_path_factory.mktemp("agree")
    built = {k: compile_example(t, k, out) for t, k in ((toolkit_61, kernel_61),
                                                         (toolkit_612, kernel_612))}
    made = {k: (driver_image(ko, k), ko) for k, ko in built.items()}
    yield made
    for name, _ko in made.values():
        buildah.remove_image(name)


@pytest.fixture(scope="module")
def cloud_and_rt(archive: DebianArchive, kernel_612: str) -> dict[str, str]:
    """6.12's newest cloud kernel (its toolkit holds the facts) and 6.12's RT."""
    newest: dict[tuple[str, str], str] = {}
    for entry in archive.kernels():
        newest.setdefault((entry.line, entry.flavour), entry.release)
    ensure_toolkit(newest["6.12", "cloud"], "auto", distro=archive)
    rt_612 = kern.parse(kernel_612).rt_sibling()
    assert rt_612
    return {"cloud_612": newest["6.12", "cloud"], "rt_612": rt_612}


def test_check_and_boot_agree_on_every_cell(*, images: dict[str, tuple[str, Path]],
                                               cloud_and_rt: dict[str, str],
                                            kernel_61: str, kernel_61_rt: str,
                                            kernel_61_old: str, kernel_612: str) -> None:
    # 6.1 cloud is checked in test_kmod_check only: dtk.vm cannot unpack its bzImage yet
    # ("the bzImage's zstd payload is corrupt: Destination buffer is too small").
    matrix = {kernel_61: (kernel_61, kernel_61_old, kernel_61_rt, kernel_612),
              kernel_612: (kernel_612, cloud_and_rt["rt_612"], cloud_and_rt["cloud_612"],
                           kernel_61)}
    cells = []
    for built_for, boot_kernels in matrix.items():
        image, ko = images[built_for]
        module = elf.read_module(ko)
        spec = VmTestSpec(image=image, kernels=boot_kernels,
                          guest=GuestConfig(module="dtk_example"), built_for=built_for)
        booted = {r.kernel: r for r in vmtest(spec)}
        for kernel in boot_kernels:
            predicted = chk.check_module(module, locate.kernel_facts(kernel), {})
            vm = booted[kernel]
            cells.append((built_for, kernel, predicted.loads, vm.verdict, vm.reason,
                          [f.message for f in predicted.refusals][:1]))
            if vm.verdict is Verdict.LOADED:  # unsigned: both say the kernel is tainted
                assert "signature missing" in vm.reason
                assert [f.code for f in predicted.findings
                        if f.severity is chk.Severity.TAINT] == ["signature"]
    for cell in cells:
        print("built for {}, booted {}: check loads={}, vm {} ({}) {}".format(*cell))
    assert all(v in (Verdict.LOADED, Verdict.REFUSED) for _b, _k, _p, v, _r, _m in cells), cells
    assert [(b, k) for b, k, loads, v, _r, _m in cells if loads != (v is Verdict.LOADED)] == []
    # check's first refusal is the kernel's: the same symbol, or the struct module size
    for _b, _k, _p, _v, reason, first in cells:
        if "disagrees about version of symbol" in reason:
            symbol = reason.split("disagrees about version of symbol ")[1].split()[0]
            assert first and f"disagrees about version of symbol {symbol} " in first[0]
        if "this_module section size must match" in reason:
            assert first and "struct module" in first[0]
    # the facts the whole product rests on
    verdicts = {(b, k): v for b, k, _p, v, _r, _m in cells}
    assert verdicts[kernel_61, kernel_61] is Verdict.LOADED
    assert verdicts[kernel_61, kernel_61_old] is Verdict.REFUSED
    assert verdicts[kernel_61, kernel_61_rt] is Verdict.REFUSED


def test_signature_enforcement_agrees(images: dict[str, tuple[str, Path]], kernel_61: str) -> None:
    """module.sig_enforce=1 (what Secure Boot's lockdown does): unsigned is refused."""
    image, ko = images[kernel_61]
    [vm] = vmtest(VmTestSpec(image=image, kernels=(kernel_61,),
                             guest=GuestConfig(module="dtk_example"), sig_enforce=True))
    predicted = chk.check_module(elf.read_module(ko), locate.kernel_facts(kernel_61), {},
                                 policy=chk.Policy(secure_boot=True))
    assert vm.verdict is Verdict.REFUSED, vm.reason
    assert [f.code for f in predicted.refusals] == ["signature"]


def test_in_tree_dependency_agrees(toolkit_61: ToolkitImage, kernel_61: str,
                                   tmp_path: Path) -> None:
    """KMM's in-tree dependency trap: modprobe -d /opt only follows the image's modules.dep."""
    ko = compile_example(toolkit_61, kernel_61, tmp_path, DATA / "needs-crc7", "needs_crc7")
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        crc7 = rootfs.resolve(root, f"/lib/modules/{kernel_61}/kernel/lib/crc7.ko")
        assert crc7 is not None
        shutil.copyfile(crc7, tmp_path / "crc7.ko")
    bare = driver_image(ko, kernel_61)
    fixed = driver_image(ko, kernel_61, {"kernel/lib/crc7.ko": tmp_path / "crc7.ko"})
    try:
        kernel = locate.kernel_facts(kernel_61)
        results = {}
        for image in (bare, fixed):
            index = read_image_index(image)
            items = index.modules[kernel_61]
            peers, names = chk.peers_of([i.module for i in items])
            [verdict] = [chk.check_module(i.module, kernel, peers, peer_modules=names,
                                          depmod=index.depmod[kernel_61])
                         for i in items if i.module.name == "needs_crc7"]
            [vm] = vmtest(VmTestSpec(image=image, kernels=(kernel_61,),
                                     guest=GuestConfig(module="needs_crc7")))
            results[image] = (verdict, vm)
        verdict, vm = results[bare]
        assert vm.verdict is Verdict.REFUSED and "Unknown symbol crc7_be" in vm.reason
        assert [f.code for f in verdict.refusals] == ["depmod"]
        verdict, vm = results[fixed]
        assert vm.verdict is Verdict.LOADED, vm.reason
        assert verdict.loads, verdict.findings
    finally:
        for image in (bare, fixed):
            buildah.remove_image(image)


def test_builtin_key_trust_agrees_with_and_without_sig_enforce(
        toolkit_61: ToolkitImage, kernel_61: str, tmp_path: Path) -> None:
    """An in-tree module signed by the kernel's build key loads under enforcement; the same
    module with one changed byte is rejected, enforced or not (-EKEYREJECTED is fatal in
    module_sig_check). check reads the built-in key from vmlinux."""
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        crc7 = rootfs.resolve(root, f"/lib/modules/{kernel_61}/kernel/lib/crc7.ko")
        assert crc7 is not None
        original = crc7.read_bytes()
    assert b"CRC7 calculations" in original
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "good" / "crc7.ko").write_bytes(original)
    (tmp_path / "bad" / "crc7.ko").write_bytes(
        original.replace(b"CRC7 calculations", b"CRC7 calculationz"))
    mok = keygen.keygen(tmp_path / "mok", "an enrolled MOK")
    kernel = locate.kernel_facts(kernel_61)
    assert kernel.builtin_certs
    outcomes = {}
    for variant, enforce in (("good", True), ("bad", True), ("bad", False)):
        image = driver_image(tmp_path / variant / "crc7.ko", kernel_61)
        try:
            policy = chk.Policy(sig_enforce=enforce)
            [verdict] = check_target(read_image_index(image, cert=keyring.load_cert(mok.cert_pem)),
                                     kernel, policy)
            [vm] = vmtest(VmTestSpec(image=image, kernels=(kernel_61,),
                                     guest=GuestConfig(module="crc7"), sig_enforce=enforce))
            outcomes[variant, enforce] = (verdict, vm)
        finally:
            buildah.remove_image(image)
    verdict, vm = outcomes["good", True]
    assert vm.verdict is Verdict.LOADED, vm.reason
    assert verdict.loads, verdict.findings
    for enforce in (True, False):
        verdict, vm = outcomes["bad", enforce]
        assert vm.verdict is Verdict.REFUSED, vm.reason
        assert "Key was rejected by service" in vm.reason
        assert [f.code for f in verdict.refusals] == ["signature"]
        assert "Key was rejected by service" in verdict.refusals[0].message


def compile_modules(toolkit: ToolkitImage, release: str, out: Path, source: Path,
                    names: tuple[str, ...]) -> dict[str, Path]:
    """Build a kbuild directory with several modules inside the toolkit, once."""
    with buildah.working_container(toolkit.name) as ctr:
        ctr.copy_in(source, "/build")
        ctr.run(["make", "-C", f"/usr/src/linux-headers-{release}", "M=/build", "modules"],
                timeout=600, what=f"compiling {', '.join(names)} for {release}")
        with ctr.mounted() as root:
            built = {}
            for name in names:
                found = rootfs.resolve(root, f"/build/{name}.ko")
                assert found is not None, name
                built[name] = out / release / f"{name}.ko"
                built[name].parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(found, built[name])
    return built


@dataclass
class Cell:
    """One boot and one check of the same image on the same kernel."""

    name: str
    vm: VmResult
    verdict: chk.Prediction
    phrase: str  # a refusal: in the kernel's (or modprobe's) reason and check's first

    @property
    def agrees(self) -> bool:
        if self.verdict.loads != (self.vm.verdict is Verdict.LOADED):
            return False
        if self.verdict.loads:  # both say whether the kernel is tainted for the signature
            tainted = [f.code for f in self.verdict.findings
                       if f.severity is chk.Severity.TAINT] == ["signature"]
            return tainted == ("signature missing or not trusted" in self.vm.reason)
        first = self.verdict.refusals[0].message
        return bool(self.phrase) and self.phrase in self.vm.reason and self.phrase in first


def _cell(name: str, image: str, kernel: str, module: str, phrase: str, *,
          enforce: bool = False, built_for: str = "") -> Cell:
    [verdict] = [v for v in check_target(read_image_index(image), locate.kernel_facts(kernel),
                                         chk.Policy(sig_enforce=enforce))
                 if v.module == module]
    [vm] = vmtest(VmTestSpec(image=image, kernels=(kernel,), guest=GuestConfig(module=module),
                             sig_enforce=enforce, built_for=built_for))
    return Cell(name, vm, verdict, phrase)


def test_signers_dependencies_and_indexes_agree(
        toolkit_61: ToolkitImage, toolkit_612: ToolkitImage, kernel_61: str, kernel_612: str,
        cloud_and_rt: dict[str, str], tmp_path: Path) -> None:
    """An unknown signer with and without enforcement, a dashed peer dependency, a
    dependency built into the kernel, and a text-only modules.dep: dtk check (the CLI's
    path, check_target) and a real boot say the same, reason included."""
    example = compile_example(toolkit_61, kernel_61, tmp_path)
    keys = keygen.keygen(tmp_path / "unknown", "a key no kernel knows")
    sign.sign_file(example, sign.make_signer(keys.key, keys.cert_pem),
                   tmp_path / "dtk_example.ko")
    peers = compile_modules(toolkit_61, kernel_61, tmp_path, DATA / "dashed-peer",
                            ("dtk-peer-core", "dtk_peer_user"))
    crc16 = compile_example(toolkit_612, kernel_612, tmp_path, DATA / "needs-crc16",
                            "needs_crc16")
    cloud = cloud_and_rt["cloud_612"]
    images = [driver_image(tmp_path / "dtk_example.ko", kernel_61),
              driver_image(peers["dtk_peer_user"], kernel_61,
                           {"extra/dtk-peer-core.ko": peers["dtk-peer-core"]}),
              driver_image(crc16, kernel_612),
              driver_image(example, kernel_61, depmod=("busybox", "depmod"))]
    signed, dashed, builtin, text_only = images
    try:
        cells = [
            _cell("unknown signer", signed, kernel_61, "dtk_example", ""),
            _cell("unknown signer, sig_enforce", signed, kernel_61, "dtk_example",
                  "Loading of module with unavailable key is rejected", enforce=True),
            _cell("dashed peer dependency", dashed, kernel_61, "dtk_peer_user", ""),
            _cell("built-in dependency (crc16 on cloud)", builtin, cloud, "needs_crc16", "",
                  built_for=kernel_612),
            _cell("in-tree dependency missing from the image", builtin, kernel_612,
                  "needs_crc16", "Unknown symbol crc16"),
            _cell("text-only modules.dep (busybox depmod)", text_only, kernel_61,
                  "dtk_example", "not found in directory"),
        ]
    finally:
        for image in images:
            buildah.remove_image(image)
    for c in cells:
        said = "; ".join(f.message for f in c.verdict.findings
                         if f.severity is not chk.Severity.OK)
        print(f"{c.name}: vm {c.vm.verdict.value} ({c.vm.reason}); check "
              f"{'loads' if c.verdict.loads else 'refused'} ({said})")
    assert [c.name for c in cells if not c.agrees] == []
    loaded = {c.name for c in cells if c.vm.verdict is Verdict.LOADED}
    assert loaded == {"unknown signer", "dashed peer dependency",
                      "built-in dependency (crc16 on cloud)"}
    # the cases are the real ones: modpost kept the dash, and cloud builds crc16 in
    assert elf.read_module(peers["dtk_peer_user"]).depends == ["dtk-peer-core"]
    assert elf.read_module(crc16).depends == ["crc16"]
    assert "crc16" in locate.kernel_facts(cloud).builtin
    assert "crc16" not in locate.kernel_facts(cloud).modules
