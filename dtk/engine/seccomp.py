"""The seccomp filter dtk's build sandbox loads (bwrap --seccomp), as classic BPF.

buildah's chroot isolation loads containers' default seccomp profile into every
build it runs; `dtk.engine.sandbox` runs DKMS builds itself, and must not give
that up. This filter refuses (EPERM) the system calls that profile keeps from a
container and that a module build has no use for: loading kernel modules,
mounting and entering or making namespaces, the kernel keyrings (root's keyrings
are the host's: no user namespace here), opening files by handle (the classic
escape from a chroot), bpf, perf, userfaultfd, io_uring, kexec, reboot, swap,
the clocks, quotas, syslog and the obsolete calls. `clone` with a namespace flag
is refused like `unshare`; `clone3` answers ENOSYS, so libc falls back to `clone`
(containers' profile does the same, since BPF cannot read clone3's flags). A
call of another architecture's ABI (x32, i386) is refused.

x86_64 only: the numbers below are that ABI's (tests compare them with the
host's <asm/unistd_64.h>). dtk builds Debian's amd64 kernels.
"""

from __future__ import annotations

import errno
import platform
import struct

from dtk.errors import DtkError

DENIED = {
    "ioperm": 173, "iopl": 172, "acct": 163, "add_key": 248, "request_key": 249,
    "keyctl": 250, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "create_module": 174,
    "query_module": 178, "get_kernel_syms": 177, "kexec_load": 246, "kexec_file_load": 320,
    "reboot": 169, "swapon": 167, "swapoff": 168, "mount": 165, "umount2": 166,
    "pivot_root": 155, "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "unshare": 272, "setns": 308,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305,
    "clock_settime": 227, "settimeofday": 164, "quotactl": 179, "quotactl_fd": 443,
    "syslog": 103, "vhangup": 153, "lookup_dcookie": 212, "nfsservctl": 180,
    "sysfs": 139, "_sysctl": 156, "ustat": 136, "uselib": 134, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "fanotify_init": 300,
}
CLONE, CLONE3 = 56, 435
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET, and CLONE_NEWTIME.
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000 | 0x00000080

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
_NR, _ARCH, _ARG0_LOW = 0, 4, 16
# Classic BPF opcodes.
_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | BPF_{JEQ,JGE,JSET} | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000


def program() -> bytes:
    """The filter as bwrap reads it: an array of struct sock_filter, native order."""
    if platform.machine() != "x86_64":
        raise DtkError(f"dtk's build sandbox has a seccomp filter for x86_64 only, not "
                       f"{platform.machine()}", hint="build on an x86_64 (amd64) machine")
    denied = sorted(set(DENIED.values()))
    # Layout: 0 load arch, 1 jeq x86_64, 2 ret ENOSYS, 3 load nr, 4 jge x32 -> deny,
    # then one jeq per denied call -> deny, jeq clone -> check, jeq clone3 -> enosys,
    # ret allow, check: load arg0, jset namespaces -> deny, ret allow; deny; enosys.
    n = len(denied)
    first_jeq = 5
    allow_at = first_jeq + n + 2
    check_at = allow_at + 1
    deny_at = check_at + 3
    enosys_at = deny_at + 1

    def to(target: int, here: int) -> int:
        return target - here - 1

    code: list[tuple[int, int, int, int]] = [
        (_LD_ABS, 0, 0, _ARCH),
        (_JEQ, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET, 0, 0, _ERRNO | errno.ENOSYS),
        (_LD_ABS, 0, 0, _NR),
        (_JGE, to(deny_at, 4), 0, _X32_BIT),
    ]
    for i, number in enumerate(denied):
        code.append((_JEQ, to(deny_at, first_jeq + i), 0, number))
    code.append((_JEQ, to(check_at, first_jeq + n), 0, CLONE))
    code.append((_JEQ, to(enosys_at, first_jeq + n + 1), 0, CLONE3))
    code.append((_RET, 0, 0, _ALLOW))
    code.append((_LD_ABS, 0, 0, _ARG0_LOW))
    code.append((_JSET, to(deny_at, check_at + 1), 0, CLONE_NAMESPACES))
    code.append((_RET, 0, 0, _ALLOW))
    code.append((_RET, 0, 0, _ERRNO | errno.EPERM))
    code.append((_RET, 0, 0, _ERRNO | errno.ENOSYS))
    assert len(code) == enosys_at + 1
    assert all(0 <= jt <= 255 for _, jt, _, _ in code)  # jumps are one byte
    return b"".join(struct.pack("=HBBI", *insn) for insn in code)
