"""The userland driver images and guests ship: package closure (pure) and ELF library closure."""

from __future__ import annotations

from pathlib import Path

from dtk.distro.userland import elf_closure, package_closure


def stanza(name: str, depends: str = "", pre: str = "") -> dict[str, str]:
    s = {"Package": name, "Version": "1", "Depends": depends}
    if pre:
        s["Pre-Depends"] = pre
    return s


def test_closure_follows_first_real_alternative_and_survives_cycles() -> None:
    stanzas = {s["Package"]: s for s in (
        stanza("kmod", "libc6 (>= 2.34), libkmod2 (= 1), liblzma5 | xz-virtual"),
        stanza("libkmod2", "libc6, libssl3t64 | libssl3"),
        stanza("libc6", "libgcc-s1"),
        stanza("libgcc-s1", "libc6", pre="gcc-12-base"),
        stanza("gcc-12-base"),
        stanza("libssl3", "libc6"),
        stanza("liblzma5", "libc6"),
        stanza("busybox-static"),
        stanza("unrelated", "libc6"),
    )}
    names = [s["Package"] for s in package_closure(stanzas, ("busybox-static", "kmod"))]
    assert names == ["busybox-static", "gcc-12-base", "kmod", "libc6", "libgcc-s1",
                     "libkmod2", "liblzma5", "libssl3"]


def test_elf_closure_of_the_hosts_kmod() -> None:
    kmod = Path("/bin/kmod").resolve()
    found = elf_closure(Path("/"), kmod)
    names = {Path(p).name for p in found}
    # kmod 30 links libkmod in statically; it still needs libc, zstd, lzma and crypto.
    assert {"libc.so.6", "libzstd.so.1", "liblzma.so.5", "ld-linux-x86-64.so.2"} <= names
    assert all(host.is_file() for host in found.values())
