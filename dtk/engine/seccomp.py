"""The seccomp filter of dtk's build sandbox (bwrap --seccomp), made by libseccomp.

buildah loads containers' default seccomp profile into every container it runs;
`dtk.engine.sandbox` runs DKMS builds itself and must not give that up. This filter
is an allow-list, as that profile is: a system call not on it answers ENOSYS, as a
kernel without the call would, so libc falls back where it can (`clone3` to `clone`)
and a call newer than the list is refused, not let through. Calls a module build
has no use for answer EPERM, stricter than containers' profile, which leaves these
to capabilities and user namespaces (the sandbox has neither to spare: root's
keyrings are the host's): module loading, mounts, namespaces (`unshare`, `setns`,
`clone` with a namespace flag), the keyrings, file handles (the classic escape from
a chroot), bpf, perf, userfaultfd, io_uring, kexec, reboot, swap, the clocks,
quotas, syslog, other processes' memory (`ptrace`, `process_vm_*`, `kcmp`,
`process_madvise`), NUMA placement, `vmsplice`, `membarrier` and `io_pgetevents`.
A call of another ABI (i386 or x32 on x86_64, arm32 on aarch64) answers ENOSYS.

libseccomp writes the program: it knows every architecture's system call numbers,
ABIs and quirks (s390x's `clone` takes its flags second; x32 numbers on x86_64),
where dtk once kept an x86_64 table of its own. It is called through ctypes on
`libseccomp.so.2`, not through Debian's python3-seccomp: that binding is built for
Debian's own Python only (3.11 in bookworm, 3.13 in trixie), and dtk runs in a
virtual environment whose Python may be another; libseccomp2 itself is on every
Debian system (apt depends on it) with a C ABI stable across its soname. The
program is made for the machine that loads it (libseccomp's native architecture),
once per process, and handed to bwrap from memory (`dtk.engine.sandbox`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from dtk.errors import DtkError

# The calls allowed unconditionally: containers/common pkg/seccomp/seccomp.json as of
# commit f437c58aab67eec2b1c942f7ad4fec37a25a3766 (2025-08-25; the file last changed in
# 8c41d98b), its unconditional SCMP_ACT_ALLOW rule, plus `chroot`, which it allows with
# CAP_SYS_CHROOT (the sandbox has it), minus what DENIED below refuses and the calls
# allowed only with conditions here (`clone`, `personality`, `socket`) or not at all
# (`clone3`: BPF cannot read its flags, which it takes in memory). Names a machine does
# not have are left out of its filter.
ALLOWED = (
    "_llseek", "_newselect", "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk",
    "capget", "capset", "chdir", "chmod", "chown", "chown32", "chroot", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2",
    "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr",
    "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64",
    "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
    "futex_time64", "futimesat", "get_robust_list", "get_thread_area", "getcpu", "getcwd",
    "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
    "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "nanosleep", "newfstatat", "open", "openat", "openat2", "pause",
    "pidfd_getfd", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
    "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
    "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
    "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg",
    "sendmsg", "sendto", "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid",
    "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32",
    "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
    "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "setsid", "setsockopt", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt",
    "shmget", "shutdown", "sigaltstack", "signal", "signalfd", "signalfd4", "sigprocmask",
    "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
    "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
    "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
    "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times",
    "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat",
    "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "wait4", "waitid", "waitpid",
    "write", "writev",
)
# Refused with EPERM. Of these, containers' profile allows the mounts, `unshare`,
# `setns` (without CAP_SYS_ADMIN, EPERM there too), the keyrings but `add_key` and
# `request_key`, `name_to_handle_at`, `ptrace`, `process_vm_*`, the NUMA calls but
# `move_pages` and `migrate_pages`, `membarrier`, `reboot`, `syslog`, `clock_adjtime`
# and `fanotify_init`; the rest it refuses too, or does not list.
DENIED = (
    # kernel modules
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms",
    # mounts and namespaces
    "mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    # the host's keyrings, files by handle
    "add_key", "request_key", "keyctl", "name_to_handle_at", "open_by_handle_at",
    # kernel programs, tracing, async interfaces that bypass the filter's view
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "fanotify_init", "lookup_dcookie",
    # the machine: kexec, reboot, swap, clocks, quotas, its log, its names, its ports
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "clock_settime",
    "clock_settime64", "settimeofday", "stime", "clock_adjtime", "clock_adjtime64",
    "quotactl", "quotactl_fd", "syslog", "acct", "vhangup", "sethostname", "setdomainname",
    "ioperm", "iopl",
    # other processes' memory, NUMA placement, and calls a build never makes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "process_madvise", "mbind",
    "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages",
    "move_pages", "vmsplice", "membarrier", "io_pgetevents", "io_pgetevents_time64",
    "nfsservctl", "sysfs", "_sysctl", "ustat", "uselib",
)
# personality(2) values containers' profile allows (PER_LINUX, PER_LINUX32, with
# UNAME26, and the query 0xffffffff); any other answers ENOSYS, as there (libseccomp
# cannot say "none of these" in one rule).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. (CLONE_NEWTIME is
# only reachable through clone3 and unshare, both refused: in clone's flags, 0x80 is
# part of the exit signal.)
CLONE_NAMESPACES = 0x7E020000
# socket(AF_NETLINK, *, NETLINK_AUDIT) answers EINVAL, as in containers' profile
# without CAP_AUDIT_WRITE: libaudit then takes auditing as absent and carries on.
AF_NETLINK, NETLINK_AUDIT = 16, 9


@dataclass(frozen=True)
class Arch:
    """A machine dtk's sandbox runs on, as libseccomp and the kernel name it."""

    machine: str  # uname -m
    token: int  # AUDIT_ARCH_*: the kernel's seccomp_data.arch, libseccomp's SCMP_ARCH_*
    big_endian: bool
    clone_flags_arg: int  # the argument clone(2) takes its flags in
    extra: tuple[str, ...] = ()  # allowed on this machine only (containers' "arches")


ARCHES = (
    Arch("x86_64", 0xC000003E, False, 0, ("arch_prctl", "modify_ldt")),
    Arch("aarch64", 0xC00000B7, False, 0, ("sync_file_range2",)),
    Arch("ppc64le", 0xC0000015, False, 0, ("sync_file_range2", "swapcontext")),
    Arch("s390x", 0x80000016, True, 1,
         ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr")),
)

ALLOW = 0x7FFF0000  # SCMP_ACT_ALLOW


def errno_action(number: int) -> int:
    """SCMP_ACT_ERRNO(number): the call fails with that errno."""
    return 0x00050000 | number


# enum scmp_compare and scmp_filter_attr (seccomp.h)
_NE, _EQ, _MASKED_EQ = 1, 4, 7
_ATTR_ACT_BADARCH = 2
# libseccomp's pseudo numbers: __PNR_* for calls a machine lacks, and the socket
# (-101...) and SysV IPC (-201...) families it can multiplex.
_PSEUDO, _IPC_FAMILY = -10000, -200


class _Compare(ctypes.Structure):
    """struct scmp_arg_cmp"""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    """struct scmp_version"""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@functools.cache
def _library() -> Any:
    """libseccomp.so.2 with the signatures of the calls dtk makes (seccomp.h)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise DtkError("libseccomp (libseccomp.so.2) is not installed: dtk's build sandbox "
                       "makes its seccomp filter with it",
                       hint="install Debian's libseccomp2 package (or run 'make deps')") from None
    ctx, u32, name = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "seccomp_init": (ctx, [u32]),
        "seccomp_release": (None, [ctx]),
        "seccomp_arch_native": (u32, []),
        "seccomp_arch_add": (ctypes.c_int, [ctx, u32]),
        "seccomp_arch_remove": (ctypes.c_int, [ctx, u32]),
        "seccomp_attr_set": (ctypes.c_int, [ctx, ctypes.c_int, u32]),
        "seccomp_syscall_resolve_name": (ctypes.c_int, [name]),
        "seccomp_syscall_resolve_name_arch": (ctypes.c_int, [u32, name]),
        "seccomp_rule_add_array": (ctypes.c_int, [ctx, u32, ctypes.c_int, ctypes.c_uint,
                                                  ctypes.POINTER(_Compare)]),
        "seccomp_export_bpf": (ctypes.c_int, [ctx, ctypes.c_int]),
        "seccomp_export_pfc": (ctypes.c_int, [ctx, ctypes.c_int]),
        "seccomp_version": (ctypes.POINTER(_Version), []),
    }
    for function, (restype, argtypes) in signatures.items():
        getattr(lib, function).restype = restype
        getattr(lib, function).argtypes = argtypes
    return lib


def _version() -> str:
    v = _library().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def native() -> Arch:
    """The architecture of this machine (as libseccomp was built for it)."""
    return arch_of(_library().seccomp_arch_native())


def arch_of(token: int) -> Arch:
    """The architecture with this AUDIT_ARCH_* token, refused if dtk has no filter for it."""
    for arch in ARCHES:
        if arch.token == token:
            return arch
    raise DtkError(f"dtk's build sandbox has no seccomp filter for this machine "
                   f"({platform.machine()}: libseccomp's architecture {token:#x})",
                   hint="build on an " + ", ".join(a.machine for a in ARCHES[:-1])
                   + f" or {ARCHES[-1].machine} machine")


@functools.cache
def program() -> bytes:
    """The filter as bwrap reads it (an array of struct sock_filter), for this machine."""
    return export(native())


def export(arch: Arch, form: Literal["bpf", "pfc"] = "bpf") -> bytes:
    """The filter for `arch`, as the kernel reads it (bpf) or as libseccomp shows it
    (pfc, its pseudo-C text). Only the native one is ever loaded: libseccomp 2.5.4 writes
    some return values of a filter for the other byte order (s390x, here) in the wrong
    one, so other machines' filters are for tests, which read them."""
    with _context(arch) as ctx:
        for name in (*ALLOWED, *arch.extra):
            _rule(ctx, arch, ALLOW, name)
        for name in DENIED:
            _rule(ctx, arch, errno_action(errno.EPERM), name)
        for value in PERSONALITIES:
            _rule(ctx, arch, ALLOW, "personality", (0, _EQ, value, 0))
        # Two allow rules cover every socket but the one refused.
        _rule(ctx, arch, ALLOW, "socket", (0, _NE, AF_NETLINK, 0))
        _rule(ctx, arch, ALLOW, "socket", (2, _NE, NETLINK_AUDIT, 0))
        _rule(ctx, arch, errno_action(errno.EINVAL), "socket",
              (0, _EQ, AF_NETLINK, 0), (2, _EQ, NETLINK_AUDIT, 0))
        # Conditions that never overlap, and no unconditional rule for the call: of two
        # unconditional rules for one call libseccomp keeps the first without a word,
        # and one unconditional rule wipes out every conditional one.
        flags = arch.clone_flags_arg
        _rule(ctx, arch, ALLOW, "clone", (flags, _MASKED_EQ, CLONE_NAMESPACES, 0))
        for bit in range(32):
            if CLONE_NAMESPACES & (1 << bit):
                _rule(ctx, arch, errno_action(errno.EPERM), "clone",
                      (flags, _MASKED_EQ, 1 << bit, 1 << bit))
        return _export(ctx, form)


@contextmanager
def _context(arch: Arch) -> Iterator[int]:
    lib = _library()
    ctx = lib.seccomp_init(errno_action(errno.ENOSYS))
    if not ctx:
        raise DtkError(f"libseccomp {_version()} could not start a filter")
    try:
        native_token = lib.seccomp_arch_native()
        if arch.token != native_token:
            # Removed first: one filter cannot hold both byte orders (EDOM).
            _check(lib.seccomp_arch_remove(ctx, native_token), "remove its own architecture")
            _check(lib.seccomp_arch_add(ctx, arch.token), f"add {arch.machine}")
        _check(lib.seccomp_attr_set(ctx, _ATTR_ACT_BADARCH, errno_action(errno.ENOSYS)),
               "answer other ABIs with ENOSYS")
        yield ctx
    finally:
        lib.seccomp_release(ctx)


def _rule(ctx: int, arch: Arch, action: int, name: str,
          *conditions: tuple[int, int, int, int]) -> None:
    lib = _library()
    if not has_call(arch, name):
        return
    # seccomp_rule_add takes the call in the native numbering and writes each of the
    # filter's architectures' own number for that name (for a call the machine also
    # multiplexes, both: see has_call).
    number = lib.seccomp_syscall_resolve_name(name.encode())
    compares = (_Compare * max(1, len(conditions)))(*(_Compare(*c) for c in conditions))
    _check(lib.seccomp_rule_add_array(ctx, action, number, len(conditions), compares),
           f"add the rule for {name}")


def has_call(arch: Arch, name: str) -> bool:
    """Whether `arch` has the call `name` (as libseccomp knows it). libseccomp numbers
    a call a machine lacks below _PSEUDO, and the socket and SysV IPC families from
    -101 on: s390x and ppc64le have these both as calls of their own and through the
    multiplexers `socketcall` and `ipc`, and a rule for one is written for both. The
    multiplexers are allowed whole, as in containers' profile (the arguments they pass
    on are in memory, where no filter can read them), which wipes out their half of a
    conditional rule: on those two, socket's conditions hold for the direct call only."""
    lib = _library()
    number = lib.seccomp_syscall_resolve_name_arch(arch.token, name.encode())
    if number >= 0:
        return True
    if number <= _PSEUDO or number == -1:
        return False
    multiplexer = "socketcall" if number > _IPC_FAMILY else "ipc"
    return bool(lib.seccomp_syscall_resolve_name_arch(arch.token, multiplexer.encode()) >= 0)


def _export(ctx: int, form: Literal["bpf", "pfc"]) -> bytes:
    fd = os.memfd_create("dtk-seccomp-export", os.MFD_CLOEXEC)
    try:
        write = getattr(_library(), f"seccomp_export_{form}")
        _check(write(ctx, fd), "export the program")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise DtkError(f"libseccomp {_version()} could not {what} for dtk's build sandbox's "
                       f"seccomp filter: {os.strerror(-rc)}",
                       hint="dtk needs libseccomp 2.5 or newer (Debian 12's libseccomp2)")
