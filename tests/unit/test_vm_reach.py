"""What the guest must hold of K so that request_module and softdeps find what a
node's /lib/modules/K holds (the libcrc32c false refusals, issue 12 §1)."""

from __future__ import annotations

import struct
from pathlib import Path

from dtk.kernel import modsig
from dtk.kernel.modules_dep import parse_modules_dep
from dtk.vm import reach

# Lines as Debian's 6.1.0-57-amd64 has them.
MODULES_DEP = """\
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/crypto/crc32c_generic.ko:
kernel/lib/libcrc32c.ko:
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/crypto/hmac.ko:
kernel/arch/x86/crypto/sha256-ssse3.ko:
kernel/drivers/net/dummy.ko:
"""
SOFTDEP = """\
# Soft dependencies extracted from modules themselves.
softdep libcrc32c pre: crc32c
softdep btrfs pre: crypto-crc32c
softdep crc_t10dif pre: crct10dif post: foo
"""
ALIAS = """\
# Aliases extracted from modules themselves.
alias crypto-crc32c-intel crc32c_intel
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias crypto-hmac hmac
alias crypto-sha256 sha256_ssse3
alias devname:mapper/control dm_mod
"""


def index() -> reach.ModuleIndex:
    return reach.ModuleIndex(parse_modules_dep(MODULES_DEP), reach.parse_softdeps(SOFTDEP),
                             reach.parse_aliases(ALIAS))


def elf(sections: dict[str, bytes]) -> bytes:
    """A minimal relocatable x86-64 ELF with the named PROGBITS sections."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in sections) + b".shstrtab\0"
    body, headers, offset, name_at = b"", [bytes(64)], 64, 1
    for name, data in sections.items():
        headers.append(struct.pack("<IIQQQQIIQQ", name_at, 1, 2, 0, offset, len(data),
                                   0, 0, 1, 0))
        body += data
        offset += len(data)
        name_at += len(name) + 1
    headers.append(struct.pack("<IIQQQQIIQQ", name_at, 3, 0, 0, offset, len(names),
                               0, 0, 1, 0))
    body += names
    sh_off = (64 + len(body) + 7) & ~7
    header = bytearray(64)
    header[0:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1
    struct.pack_into("<HHI", header, 16, 1, 62, 1)
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHHHHH", header, 0x34, 64, 0, 0, 64, len(headers), len(headers) - 1)
    out = bytes(header) + body
    return out + b"\0" * (sh_off - len(out)) + b"".join(headers)


def test_softdeps_and_aliases_parse_as_modprobe_reads_them() -> None:
    assert reach.parse_softdeps(SOFTDEP)["libcrc32c"] == ("crc32c",)
    assert reach.parse_softdeps(SOFTDEP)["crc_t10dif"] == ("crct10dif", "foo")
    aliases = reach.parse_aliases(ALIAS)
    assert aliases["crypto-crc32c"] == ("crc32c_intel", "crc32c_generic")
    assert not any("*" in a for a in aliases)  # device ids: nothing here asks for them


def test_libcrc32c_reaches_the_crc32c_implementations_through_its_softdep() -> None:
    """Before: only modules.dep was followed, the guest had libcrc32c without any
    crc32c, and libcrc32c's init failed with -ENOENT (no kernel message)."""
    paths = reach.reach(index(), ["dm_mod", "libcrc32c"], lambda rel: ())
    assert sorted(paths) == ["kernel/arch/x86/crypto/crc32c-intel.ko",
                             "kernel/crypto/crc32c_generic.ko", "kernel/drivers/md/dm-mod.ko",
                             "kernel/lib/libcrc32c.ko"]


def test_crypto_requests_in_a_modules_strings_are_followed() -> None:
    requests = {"kernel/drivers/md/dm-mod.ko": ["crypto-hmac(sha256)", "crypto-hmac",
                                                "crypto-sha256", "crypto-no-such-alg"]}
    paths = reach.reach(index(), ["dm_bufio"], lambda rel: requests.get(rel, ()))
    assert sorted(paths) == ["kernel/arch/x86/crypto/sha256-ssse3.ko", "kernel/crypto/hmac.ko",
                             "kernel/drivers/md/dm-bufio.ko", "kernel/drivers/md/dm-mod.ko"]
    assert paths.index("kernel/drivers/md/dm-mod.ko") < paths.index(
        "kernel/drivers/md/dm-bufio.ko")  # dependencies first


def test_unknown_and_built_in_names_reach_nothing() -> None:
    assert reach.reach(index(), ["sha256_generic", "no_such_module"], lambda rel: ()) == []


def test_requests_of_a_module_read_softdeps_and_rodata_strings() -> None:
    module = elf({".modinfo": b"license=GPL\0softdep=pre: crc32c post: dummy\0",
                  ".rodata.str1.1": b"hmac(sha256)\0%s: cannot allocate %s\0crc32c\0",
                  ".text": b"sha1\0"})
    requests = reach.requests_of(module, "apfs.ko")
    assert requests[:2] == ["crc32c", "dummy"]
    assert set(requests[2:]) == {"crypto-hmac(sha256)", "crypto-hmac", "crypto-sha256",
                                 "crypto-crc32c"}  # .text is code, never a request


def test_requests_of_garbage_are_empty() -> None:
    assert reach.requests_of(b"not an elf", "x.ko") == []


def test_a_signature_asks_for_its_digest() -> None:
    """The kernel requests crypto-<digest> while it checks a module's signature: 6.1 builds
    sha512 as a module, so a guest without it called a SHA-512-signed module unsupported
    crypto, which a node (with all of /lib/modules) loads."""
    crc7 = (Path(__file__).parent.parent / "data" / "kmod" / "crc7-6.1.0-56-amd64.ko")
    signed = crc7.read_bytes()  # Debian signs its modules with sha256
    assert reach.requests_of(signed, "crc7.ko")[-1:] == ["crypto-sha256"]
    content, _sig = modsig.split(signed)
    assert "crypto-sha256" not in reach.requests_of(content, "crc7.ko")
