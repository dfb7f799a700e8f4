"""The sandbox's seccomp filter, run by a classic-BPF interpreter written from the
kernel's documentation (Documentation/networking/filter.rst, userspace-api/seccomp_filter.rst),
and its syscall numbers compared with the host's own <asm/unistd_64.h>."""

from __future__ import annotations

import errno
import re
import struct
from pathlib import Path

import pytest

from dtk.engine import seccomp

X86_64, I386 = 0xC000003E, 0x40000003
ALLOW, ERRNO = 0x7FFF0000, 0x00050000
UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


def verdict(nr: int, arch: int = X86_64, arg0: int = 0) -> int:
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    prog = seccomp.program()
    code = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    acc, pc = 0, 0
    while True:
        op, jt, jf, k = (int(x) for x in code[pc])
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("=I", data, k)[0]
        elif op == 0x06:  # ret k
            return k
        elif op in (0x15, 0x35, 0x45):
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[op]
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unknown opcode {op:#x}")
        pc += 1


def host_numbers() -> dict[str, int]:
    text = UNISTD.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", text)}


def test_numbers_are_the_hosts() -> None:
    """linux-libc-dev is one of `make deps`' packages: the header is always there."""
    numbers = host_numbers()
    for name, number in seccomp.DENIED.items():
        assert numbers[name] == number, name
    assert numbers["clone"] == seccomp.CLONE and numbers["clone3"] == seccomp.CLONE3


@pytest.mark.parametrize("name", sorted(seccomp.DENIED))
def test_denied_calls_get_eperm(name: str) -> None:
    assert verdict(seccomp.DENIED[name]) == ERRNO | errno.EPERM


@pytest.mark.parametrize("name", ["read", "write", "openat", "execve", "mmap", "wait4",
                                  "fork", "vfork", "ptrace", "chroot", "mknodat"])
def test_what_builds_use_is_allowed(name: str) -> None:
    assert verdict(host_numbers()[name]) == ALLOW


def test_clone_with_a_namespace_flag_is_refused() -> None:
    sigchld, clone_newuser, clone_newns, clone_thread = 17, 0x10000000, 0x00020000, 0x00010000
    assert verdict(seccomp.CLONE, arg0=sigchld) == ALLOW
    assert verdict(seccomp.CLONE, arg0=sigchld | clone_thread) == ALLOW
    assert verdict(seccomp.CLONE, arg0=sigchld | clone_newuser) == ERRNO | errno.EPERM
    assert verdict(seccomp.CLONE, arg0=clone_newns) == ERRNO | errno.EPERM


def test_clone3_falls_back_and_other_abis_are_refused() -> None:
    assert verdict(seccomp.CLONE3) == ERRNO | errno.ENOSYS
    assert verdict(0x40000000 | 0) == ERRNO | errno.EPERM  # x32's read
    assert verdict(3, arch=I386) == ERRNO | errno.ENOSYS
