"""`dtk check` on modules compiled in real toolkits, against real kernels' facts."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest

from dtk import rootfs
from dtk import run as runner
from dtk.distro.debian import DebianArchive
from dtk.engine import buildah
from dtk.kernel import facts
from dtk.kmod import check as chk
from dtk.kmod import elf
from dtk.toolkit import headers, locate
from dtk.toolkit.images import ToolkitImage, ensure_toolkit

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "dtk-example"
DTK = str(Path(__file__).parent.parent.parent / ".venv" / "bin" / "dtk")


def compile_example(toolkit: ToolkitImage, release: str, out: Path, source: Path = EXAMPLE,
                    name: str = "dtk_example") -> Path:
    """Build a module (default: examples/dtk-example) with kbuild inside the toolkit;
    return the .ko on the host."""
    with buildah.working_container(toolkit.name) as ctr:
        ctr.copy_in(source, "/build")
        ctr.run(["make", "-C", f"/usr/src/linux-headers-{release}", "M=/build", "modules"],
                timeout=600, what=f"compiling {name} for {release}")
        with ctr.mounted() as root:
            built = rootfs.resolve(root, f"/build/{name}.ko")
            assert built is not None
            target = out / release / f"{name}.ko"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built, target)
    return target


@pytest.fixture(scope="module")
def toolkit_61_old(archive: DebianArchive, kernel_61_old: str) -> ToolkitImage:
    return ensure_toolkit(kernel_61_old, "auto", distro=archive)


@pytest.fixture(scope="module")
def example_61(toolkit_61: ToolkitImage, kernel_61: str,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_example(toolkit_61, kernel_61, tmp_path_factory.mktemp("ko"))


@pytest.fixture(scope="module")
def example_612(toolkit_612: ToolkitImage, kernel_612: str,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_example(toolkit_612, kernel_612, tmp_path_factory.mktemp("ko"))


def test_facts_are_extracted_once_then_cached(toolkit_61: ToolkitImage, kernel_61: str) -> None:
    name, image_id = locate.find_toolkit(kernel_61)
    assert name == toolkit_61.name
    cached = facts.cache_path(locate.image_key(image_id, kernel_61))
    cached.unlink(missing_ok=True)  # really exercise the extraction
    start = time.monotonic()
    first = locate.kernel_facts(kernel_61)
    extract_s = time.monotonic() - start
    start = time.monotonic()
    again = locate.kernel_facts(kernel_61)
    cached_s = time.monotonic() - start
    print(f"facts for {kernel_61}: extracted in {extract_s:.2f} s, cached in {cached_s:.3f} s")
    assert again == first
    assert cached.is_file()
    assert cached_s < extract_s
    assert first.vermagic == facts.vermagic_from_config(kernel_61, first.config)
    assert "module_layout" in first.symbols
    assert {"usbcore", "usb_storage", "scsi_mod"} <= first.modules


def test_vermagic_from_config_matches_the_modules(toolkit_61: ToolkitImage,
                                                  toolkit_612: ToolkitImage) -> None:
    """The headers-only path (--kernel-root, the benchmark) derives vermagic from .config."""
    for kernel in (*toolkit_61.kernels, *toolkit_612.kernels):
        known = locate.kernel_facts(kernel)  # vermagic read from an in-tree module
        assert facts.vermagic_from_config(kernel, known.config) == known.vermagic, kernel


def test_built_for_newest_61_loads_there_only(example_61: Path, kernel_61: str,
                                              kernel_61_rt: str, kernel_61_old: str,
                                              toolkit_61_old: ToolkitImage) -> None:
    module = elf.read_module(example_61)
    assert module.vermagic is not None
    assert module.vermagic.startswith(kernel_61 + " ")
    own = chk.check_module(module, locate.kernel_facts(kernel_61), {})
    assert own.loads, own.findings
    old = chk.check_module(module, locate.kernel_facts(kernel_61_old), {})
    assert [f.code for f in old.refusals] == ["crc"] * len(old.refusals)
    assert "disagrees about version of symbol module_layout" in old.refusals[0].message
    rt = chk.check_module(module, locate.kernel_facts(kernel_61_rt), {})
    # load_module() checks module_layout before vermagic: both refuse
    assert [f.code for f in rt.refusals][:2] == ["crc", "vermagic"]
    assert "preempt_rt" in rt.refusals[1].message


def test_612_module_is_refused_by_61_and_loads_on_612(example_612: Path,
                                                      kernel_612: str, kernel_61: str) -> None:
    module = elf.read_module(example_612)
    assert "module_layout" in dict(module.versions)  # Debian's 6.12 still checks it
    assert chk.check_module(module, locate.kernel_facts(kernel_612), {}).loads
    verdict = chk.check_module(module, locate.kernel_facts(kernel_61), {})
    assert not verdict.loads
    assert "module_layout" in verdict.refusals[0].message


def test_every_in_tree_module_loads_on_its_own_kernel(toolkit_61: ToolkitImage,
                                                      kernel_61: str, kernel_61_rt: str) -> None:
    """Thousands of modules the real kernel does load: check must not refuse any of them."""
    kernel = locate.kernel_facts(kernel_61)
    rt = locate.kernel_facts(kernel_61_rt)
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        mods = [elf.read_module(host) for inner, host in
                rootfs.walk_files(root, f"/lib/modules/{kernel_61}") if ".ko" in inner]
    start = time.monotonic()
    verdicts = [chk.check_module(m, kernel, {}) for m in mods]
    rate = len(mods) / (time.monotonic() - start)
    print(f"{len(mods)} in-tree checks at {rate:.0f}/s")
    assert [v.path for v in verdicts if not v.loads] == []
    assert not any(chk.check_module(m, rt, {}).loads for m in mods[:200])


def _scratch_image(ko: Path, kernel_dir: str) -> str:
    name = f"localhost/dtk-test-kmod-{uuid.uuid4().hex[:8]}:{kernel_dir.replace('+', '_')}"
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(ko, f"/opt/lib/modules/{kernel_dir}/extra/{ko.name}")
        with ctr.mounted() as root:
            runner.run(["depmod", "-b", str(root / "opt"), kernel_dir], timeout=120)
        ctr.commit(name)
    return name


def test_cli_matrix_and_json(example_61: Path, example_612: Path, kernel_61: str,
                             kernel_61_rt: str, kernel_612: str) -> None:
    image = _scratch_image(example_61, kernel_61)
    try:
        argv = [DTK, "check", image, str(example_612), "--kernel", kernel_61,
                "--kernel", kernel_61_rt, "--kernel", kernel_612]
        # A wide terminal: a narrower one cuts the long target names this test reads.
        table = runner.run(argv, check=False, timeout=300, env={"COLUMNS": "400"})
        assert table.returncode == 1, table.stderr
        rows = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
        assert rows[image].split()[1] == "loaded"
        assert rows[str(example_612)].split()[1].startswith("refused")
        single = runner.run([DTK, "check", image, "--kernel", kernel_61, "--json"],
                            check=False, timeout=300)
        assert single.returncode == 0, single.stderr
        [verdict] = json.loads(single.stdout)
        assert verdict["loads"] and verdict["module"] == "dtk_example"
        assert verdict["verdict"] == "loaded"  # the word dtk vmtest uses
        name, image_id = locate.find_toolkit(kernel_61)  # structured: name and full id
        assert verdict["kernel_facts"]["image"] == name
        assert verdict["kernel_facts"]["image_id"] == image_id and len(image_id) == 64
        assert verdict["kernel_facts"]["source"].startswith(name)
        assert verdict["path"] == f"/opt/lib/modules/{kernel_61}/extra/dtk_example.ko"
    finally:
        buildah.remove_image(image)


def test_check_against_a_directory_of_kernel_files(tmp_path: Path,
                                                   example_61: Path, kernel_61: str,
                                                   toolkit_61: ToolkitImage) -> None:
    """--kernel-root: an installed system or unpacked packages instead of a toolkit."""
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        for inner in (f"/usr/src/linux-headers-{kernel_61}/Module.symvers",
                      f"/boot/config-{kernel_61}"):
            host = rootfs.resolve(root, inner)
            assert host is not None
            (tmp_path / inner.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(host, tmp_path / inner.lstrip("/"))
    result = runner.run([DTK, "check", str(example_61), "--kernel", kernel_61,
                         "--kernel-root", str(tmp_path)], check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded (predicted)" in result.stdout


def test_headers_package_gives_the_same_answer_as_the_toolkit(
        *, example_61: Path, kernel_61: str, kernel_61_old: str, toolkit_61: ToolkitImage,
        toolkit_61_old: ToolkitImage) -> None:
    """The no-toolkit fallback (linux-headers-K only) agrees with the toolkit's facts."""
    module = elf.read_module(example_61)
    for kernel in (kernel_61, kernel_61_old):
        from_toolkit = locate.kernel_facts(kernel, download=False)
        from_headers = facts.for_directory(headers.headers_root(kernel), kernel)
        assert from_headers.symbols == from_toolkit.symbols
        assert from_headers.vermagic == from_toolkit.vermagic
        assert {m for s in from_headers.symbols.values() if (m := s.module_name) != "vmlinux"} \
            <= from_toolkit.modules
        assert chk.check_module(module, from_headers, {}).findings == \
            chk.check_module(module, from_toolkit, {}).findings
