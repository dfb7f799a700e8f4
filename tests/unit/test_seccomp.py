"""The sandbox's seccomp filter as libseccomp writes it, run by a classic-BPF interpreter
written from the kernel's documentation (Documentation/networking/filter.rst,
userspace-api/seccomp_filter.rst, and the instructions kernel/seccomp.c accepts), for
every system call number of each machine dtk's sandbox runs on. The numbers come from
libseccomp's tables, checked against the kernel's headers where this machine has them.
s390x's program is read here through libseccomp's text form (PFC) instead: exported
on this little-endian machine, some of its return values come out byte-swapped."""

from __future__ import annotations

import ctypes
import errno
import json
import operator
import platform
import re
import struct
from functools import cache
from pathlib import Path

import pytest

from dtk.engine import sandbox, seccomp
from dtk.errors import DtkError

ALLOW = 0x7FFF0000
EPERM, EINVAL, ENOSYS = (0x00050000 | e for e in (errno.EPERM, errno.EINVAL, errno.ENOSYS))
# BPF_ADD, SUB, MUL, OR, AND, LSH, RSH, XOR (what libseccomp could write; no DIV, MOD, NEG)
ALU = {0x00: operator.add, 0x10: operator.sub, 0x20: operator.mul, 0x40: operator.or_,
       0x50: operator.and_, 0x60: operator.lshift, 0x70: operator.rshift, 0xA0: operator.xor}
ARCH = {arch.machine: arch for arch in seccomp.ARCHES}
# Read by the interpreter: the little-endian ones.
READABLE = ("x86_64", "aarch64", "ppc64le")
# Another ABI of each: i386 (x86_64), arm (aarch64), big-endian ppc64 (ppc64le).
OTHER_ABI = {"x86_64": 0x40000003, "aarch64": 0x40000028, "ppc64le": 0x80000015}
UNISTD_64 = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")  # linux-libc-dev
GENERIC = Path("/usr/include/asm-generic/unistd.h")  # aarch64's numbers
# containers' profile as Debian ships it (golang-github-containers-common, with buildah)
PROFILE = Path("/usr/share/containers/seccomp.json")
# What the containers/common commit dtk's list follows (f437c58a) allows and Debian 12's
# older copy of the profile (0.50.1) does not: fchmodat2 is newer (Linux 6.6), and ppc64le's
# swapcontext, which that copy refused on every machine, is allowed on ppc64le since.
NEWER_THAN_PROFILE = {"fchmodat2", "swapcontext"}


@cache
def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_char_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    return lib


@cache
def calls(machine: str) -> dict[int, str]:
    """Every system call number of the machine libseccomp names, with its name."""
    token = ARCH[machine].token
    names = (_lib().seccomp_syscall_resolve_num_arch(token, nr) for nr in range(1024))
    return {nr: name.decode() for nr, name in enumerate(names) if name}


def number(machine: str, name: str) -> int:
    return next(nr for nr, call in calls(machine).items() if call == name)


@cache
def program(machine: str) -> list[tuple[int, int, int, int]]:
    """The machine's program as struct sock_filter {u16 code; u8 jt, jf; u32 k}."""
    prog = seccomp.export(ARCH[machine])
    return [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)]


def verdict(machine: str, nr: int, *args: int, token: int | None = None) -> int:
    """Run the machine's program on struct seccomp_data {int nr; u32 arch; u64 ip;
    u64 args[6]}, little-endian as the READABLE machines are, and return the action."""
    code = program(machine)
    data = struct.pack("<iIQ6Q", nr, token or ARCH[machine].token, 0,
                       *args, *[0] * (6 - len(args)))
    acc, index, scratch, pc = 0, 0, [0] * 16, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        kind = op & 0x07
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op in (0x00, 0x01, 0x60, 0x61):  # ld #k, ldx #k, ld M[k], ldx M[k]
            value = scratch[k] if op & 0x60 else k
            acc, index = (acc, value) if op & 1 else (value, index)
        elif op in (0x02, 0x03):  # st, stx
            scratch[k] = index if op & 1 else acc
        elif op in (0x07, 0x87):  # tax, txa
            acc, index = (index, index) if op & 0x80 else (acc, acc)
        elif op in (0x06, 0x16):  # ret k, ret a
            return acc if op & 0x10 else k
        elif kind == 0x04:  # alu
            src = index if op & 0x08 else k
            acc = ALU[op & 0xF0](acc, src) & 0xFFFFFFFF
        elif op == 0x05:  # ja
            pc += k
        elif kind == 0x05:  # jeq, jgt, jge, jset
            src = index if op & 0x08 else k
            hit = {0x10: acc == src, 0x20: acc > src, 0x30: acc >= src,
                   0x40: bool(acc & src)}[op & 0xF0]
            pc += jt if hit else jf
        else:
            raise AssertionError(f"an instruction seccomp does not take: {op:#x}")


def listed(machine: str, name: str | None) -> int:
    """What dtk's lists say a call with all-zero arguments gets."""
    if name in (*seccomp.ALLOWED, *ARCH[machine].extra, "clone", "personality", "socket"):
        return ALLOW
    return EPERM if name in seccomp.DENIED else ENOSYS


@pytest.mark.parametrize("machine", READABLE)
def test_every_number_gets_its_lists_answer(machine: str) -> None:
    """Allowed, refused (EPERM), or not listed (ENOSYS): every number up to 1023, so
    every call libseccomp names and every one newer than its tables."""
    wrong = {}
    for nr in range(1024):
        name = calls(machine).get(nr)
        if (got := verdict(machine, nr)) != (want := listed(machine, name)):
            wrong[nr, name] = hex(got), hex(want)
    assert wrong == {}


@pytest.mark.parametrize("machine", READABLE)
def test_the_calls_a_build_needs_and_those_it_must_not_make(machine: str) -> None:
    for name in ("read", "write", "openat", "execve", "mmap", "wait4", "exit_group",
                 "newfstatat", "statx", "getdents64", "pipe2", "dup3", "chroot"):
        assert verdict(machine, number(machine, name)) == ALLOW, name
    for name in ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "mbind",
                 "get_mempolicy", "set_mempolicy", "migrate_pages", "move_pages", "vmsplice",
                 "membarrier", "io_pgetevents", "keyctl", "add_key", "name_to_handle_at",
                 "open_by_handle_at", "mount", "umount2", "unshare", "setns", "finit_module",
                 "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "kexec_load",
                 "reboot", "swapon", "clock_settime", "quotactl", "syslog"):
        assert verdict(machine, number(machine, name)) == EPERM, name
    for name in ("clone3", "futex_waitv", "cachestat", "map_shadow_stack"):
        assert verdict(machine, number(machine, name)) == ENOSYS, name


@pytest.mark.parametrize("machine", READABLE)
def test_clone_with_a_namespace_flag_is_refused(machine: str) -> None:
    clone, at = number(machine, "clone"), ARCH[machine].clone_flags_arg
    sigchld, thread_flags = 17, 0x003D0F00  # what glibc's fork and pthread_create pass

    def flags(value: int) -> list[int]:
        return [value if i == at else 0 for i in range(6)]

    assert verdict(machine, clone, *flags(sigchld)) == ALLOW
    assert verdict(machine, clone, *flags(thread_flags)) == ALLOW
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                 0x40000000):
        assert verdict(machine, clone, *flags(sigchld | flag)) == EPERM, hex(flag)
    # The upper half of the flags is not the kernel's (it reads an int).
    assert verdict(machine, clone, *flags(sigchld | 1 << 32)) == ALLOW


@pytest.mark.parametrize("machine", READABLE)
def test_personality_and_the_audit_socket(machine: str) -> None:
    personality, socket = number(machine, "personality"), number(machine, "socket")
    for value in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert verdict(machine, personality, value) == ALLOW, hex(value)
    for value in (0x0040000, 0x0400000, 1 << 32):  # ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC
        assert verdict(machine, personality, value) == ENOSYS, hex(value)
    af_inet, af_netlink, sock_raw, netlink_route, netlink_audit = 2, 16, 3, 0, 9
    assert verdict(machine, socket, af_inet, 1, 0) == ALLOW
    assert verdict(machine, socket, af_inet, sock_raw, netlink_audit) == ALLOW
    assert verdict(machine, socket, af_netlink, sock_raw, netlink_route) == ALLOW
    assert verdict(machine, socket, af_netlink, sock_raw, netlink_audit) == EINVAL


@pytest.mark.parametrize("machine", READABLE)
def test_another_abi_is_refused(machine: str) -> None:
    for nr in range(512):
        assert verdict(machine, nr, token=OTHER_ABI[machine]) == ENOSYS, nr
    if machine == "x86_64":  # x32: x86_64's arch token, numbers from 0x40000000
        for nr in (0, 1, 39, 56, 59, 101, 512, 545):
            assert verdict(machine, 0x40000000 | nr) == ENOSYS, nr


def test_s390x_through_its_text() -> None:
    """Per call, the actions of s390x's filter, and which argument clone's rules read
    (s390x's clone takes the stack first, its flags second)."""
    text = seccomp.export(ARCH["s390x"], "pfc").decode()
    blocks = {}
    for chunk in text.split('# filter for syscall "')[1:]:
        name, _, body = chunk.partition('"')
        blocks[name] = body.split("# default action")[0]
    assert "action ERRNO(1)" in blocks["ptrace"] and "action ALLOW" in blocks["openat"]
    assert "$a1.lo32 & 0x7e020000 == 0" in blocks["clone"] and "$a0" not in blocks["clone"]
    assert blocks["clone"].count("action ERRNO(1)") == 7
    assert "action ERRNO(22)" in blocks["socket"]
    assert "clone3" not in blocks and "futex_waitv" not in blocks
    assert text.count("action ERRNO(38);") == 2  # the default and another ABI's answer


def test_libseccomps_numbers_are_the_kernels() -> None:
    """Against linux-libc-dev's headers: x86_64's table whole, and the generic table
    aarch64 uses for the calls the sandbox's rules hinge on."""
    x86_64 = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)",
                                                    UNISTD_64.read_text())}
    assert x86_64 and {nr: name for name, nr in x86_64.items()} == {
        nr: name for nr, name in calls("x86_64").items() if nr in x86_64.values()}
    generic = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)",
                                                     GENERIC.read_text())}
    for name in ("openat", "clone", "ptrace", "keyctl", "personality", "socket", "mount"):
        assert number("aarch64", name) == generic[name], name


def test_the_lists() -> None:
    """Disjoint (libseccomp keeps, without a word, the first of two rules for one call),
    and every name one libseccomp knows on some machine (a typo would be refused)."""
    assert not set(seccomp.ALLOWED) & set(seccomp.DENIED)
    every = {*seccomp.ALLOWED, *seccomp.DENIED, *(n for a in seccomp.ARCHES for n in a.extra)}
    assert every.isdisjoint({"clone", "clone3", "personality", "socket"})
    unknown = {name for name in every
               if _lib().seccomp_syscall_resolve_name(name.encode()) == -1}
    assert unknown == set()


def test_no_wider_than_containers_profile() -> None:
    """Every call dtk allows, containers' profile (as this machine's buildah loads it)
    allows too, for the sandbox's capabilities: unconditionally, or (clone, personality,
    socket) with conditions dtk's rules keep or narrow."""
    profile = json.loads(PROFILE.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    caps = {f"CAP_{cap}" for cap in sandbox.CAPABILITIES}
    allowed: set[str] = set()
    for rule in profile["syscalls"]:
        needs = set((rule.get("includes") or {}).get("caps") or ())
        if rule["action"] == "SCMP_ACT_ALLOW" and needs <= caps:
            allowed.update(rule["names"])
    ours = {*seccomp.ALLOWED, *(n for a in seccomp.ARCHES for n in a.extra)}
    assert ours - allowed == NEWER_THAN_PROFILE
    assert {"clone", "personality", "socket"} <= allowed


def test_made_for_this_machine() -> None:
    assert seccomp.native().machine == platform.machine()
    assert seccomp.program() == seccomp.export(seccomp.native())
    with pytest.raises(DtkError, match="no seccomp filter") as refused:
        seccomp.arch_of(0xC00000F3)  # riscv64: libseccomp knows it, dtk does not
    assert "0xc00000f3" in str(refused.value) and "aarch64" in (refused.value.hint or "")
