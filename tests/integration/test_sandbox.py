"""The DKMS build sandbox (real bwrap, a real toolkit) and the one-layer image writer
(real skopeo into real container storage)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import platform
import struct
import subprocess
from pathlib import Path

import pytest

from dtk import run as runner
from dtk.distro.debian import DebianArchive
from dtk.driver.base import ensure_base
from dtk.driver.plan import ImageRef
from dtk.engine import buildah, imagewrite, sandbox, seccomp
from dtk.toolkit.images import ToolkitImage

# containers.conf's default capabilities, as a CapEff mask: chown 0, dac_override 1,
# fowner 3, fsetid 4, kill 5, setgid 6, setuid 7, setpcap 8, net_bind_service 10,
# sys_chroot 18, setfcap 31.
DEFAULT_CAPS = sum(1 << b for b in (0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31))


def in_sandbox(roots: sandbox.Roots, image: str, script: str,
               volumes: tuple[tuple[Path, str], ...] = ()) -> str:
    result = sandbox.run(roots.root(image), ["bash", "-c", script], volumes=volumes,
                         check=False, timeout=120)
    assert result.returncode == 0, result.stdout
    return result.stdout


def syscall_number(name: str) -> int:
    """This machine's number for a system call, from libseccomp's tables (the real part the
    filter is made from; the probes below must not depend on dtk to name their calls)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    number = int(lib.seccomp_syscall_resolve_name(name.encode()))
    assert number >= 0, name
    return number


def highest_known() -> int:
    """The highest system call number libseccomp has a name for on this machine."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_char_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    arch = lib.seccomp_arch_native()
    return max(n for n in range(2048) if lib.seccomp_syscall_resolve_num_arch(arch, n))


def sandbox_mounts() -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines()
            if "dtk-sandbox" in line]


def test_confined_as_buildah_confines_a_container(toolkit_61: ToolkitImage) -> None:
    with sandbox.image_roots() as roots:
        out = in_sandbox(roots, toolkit_61.name, r"""
            grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
            bash -c "echo again: \$(grep CapPrm /proc/self/status | cut -f2)"
            echo "pids: $(ls /proc | grep -c '^[0-9]')"
            echo "dev: $(ls /dev | tr '\n' ' ')"
            echo "net: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
            unshare -U true 2>/dev/null && echo "unshare: allowed" || echo "unshare: refused"
            mount -t tmpfs x /mnt 2>/dev/null && echo "mount: allowed" || echo "mount: refused"
            echo "user: $(id -u)"; echo "HOME=$HOME"
            for f in /dev/core /proc/kcore /proc/keys /proc/timer_list; do
              [ -e "$f" ] && echo "masked $f: $(cat "$f" 2>/dev/null | wc -c)"
            done
            echo "acpi: $(ls -A /proc/acpi 2>/dev/null | wc -l)" \
                 "firmware: $(ls -A /sys/firmware | wc -l)"
            """)
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    # The bounding set is left as it is (bwrap outside a user namespace); what matters
    # is that no exec can gain more: root's usual gain is off (the ambient set is all
    # an exec keeps) and no_new_privs ignores file capabilities.
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(fields[field], 16) == DEFAULT_CAPS, field
    assert int(fields["again"], 16) == DEFAULT_CAPS  # after one more exec
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    assert int(fields["pids"]) <= 5, out  # its own processes only, not the host's
    assert set(fields["dev"].split()) <= {"console", "core", "fd", "full", "null", "ptmx", "pts",
                                          "random", "shm", "stderr", "stdin", "stdout", "tty",
                                          "urandom", "zero"}, out
    assert fields["net"].split() == ["lo"]
    assert fields["unshare"].strip() == "refused" and fields["mount"].strip() == "refused"
    assert fields["user"].strip() == "0" and "HOME=/root" in out
    masked = [line for line in out.splitlines() if line.startswith("masked ")]
    assert masked and all(line.endswith(": 0") for line in masked), masked
    assert "acpi: 0 firmware: 0" in out
    assert sandbox_mounts() == []


# Calls the sandbox's capabilities allow (the kernel asks for none of them here), so
# that only the seccomp filter can refuse them: (label, call, perl arguments, the errno
# expected; 0: the call succeeds).
PROBES = (
    ("keyctl", "keyctl", "0, -3, 0", errno.EPERM),  # KEYCTL_GET_KEYRING_ID, session ring
    ("add_key", "add_key", "$type, $name, $name, 1, -2", errno.EPERM),  # process ring
    ("name_to_handle_at", "name_to_handle_at", "-100, $root, $handle, $mount, 0", errno.EPERM),
    ("ptrace", "ptrace", "2, $$, 0, 0", errno.EPERM),  # PTRACE_PEEKDATA, untraced: ESRCH
    ("process_vm_readv", "process_vm_readv", "$$, 0, 0, 0, 0, 0", errno.EPERM),
    ("get_mempolicy", "get_mempolicy", "0, 0, 0, 0, 0", errno.EPERM),
    ("vmsplice", "vmsplice", "-1, 0, 0, 0", errno.EPERM),
    ("membarrier", "membarrier", "0, 0, 0", errno.EPERM),  # MEMBARRIER_CMD_QUERY
    ("personality query", "personality", "0xffffffff", 0),
    ("personality ADDR_NO_RANDOMIZE", "personality", "0x0040000", errno.ENOSYS),
    ("netlink audit socket", "socket", "16, 3, 9", errno.EINVAL),  # AF_NETLINK, RAW, AUDIT
    ("futex_waitv", "futex_waitv", "0, 0, 0, 0, 0", errno.ENOSYS),  # not on the list
    ("getppid", "getppid", "", 0),
)


def probe_script() -> str:
    """Perl (the toolkit has perl, not python) making each probe's raw system call, then
    listing its open descriptors."""
    calls = [(label, syscall_number(name), args) for label, name, args, _ in PROBES]
    # A number above every one libseccomp names: a call newer than its tables, or none.
    calls.append(("above the list", highest_known() + 1, ""))
    if platform.machine() == "x86_64":  # the x32 ABI's getpid: another ABI's call
        calls.append(("x32 getpid", 0x40000000 | syscall_number("getpid"), ""))
    # syscall() passes a string as a pointer, and may write through it: variables only.
    script = ['my ($type, $name, $root) = ("user", "dtk-probe", "/");',
              'my $handle = pack("LL", 0, 0) . ("\\0" x 128); my $mount = pack("L", 0);']
    for label, number, args in calls:
        call = ", ".join(part for part in (str(number), args) if part)
        script.append(f'$! = 0; $r = syscall({call}); '
                      f'printf "probe {label}=%d\\n", $r == -1 ? 0 + $! : 0;')
    script.append('opendir(my $fds, "/proc/self/fd"); '
                  'print "fds: ", join(" ", sort grep { !/^\\./ } readdir($fds)), "\\n";')
    return "\n".join(script)


def probe(root: sandbox.ImageRoot) -> tuple[dict[str, int], str]:
    result = sandbox.run(root, ["perl", "-e", probe_script()], check=False, timeout=120)
    assert result.returncode == 0, result.stdout
    got = {line[len("probe "):].rsplit("=", 1)[0]: int(line.rsplit("=", 1)[1])
           for line in result.stdout.splitlines() if line.startswith("probe ")}
    return got, result.stdout


def expected() -> dict[str, int]:
    want = {label: answer for label, _, _, answer in PROBES}
    want["above the list"] = errno.ENOSYS
    if platform.machine() == "x86_64":
        want["x32 getpid"] = errno.ENOSYS
    return want


def test_the_filter_refuses_what_the_capabilities_allow(toolkit_61: ToolkitImage) -> None:
    """Each probe would succeed, or fail another way, without dtk's filter: its answer
    (EPERM: refused; ENOSYS: not on the list, or another ABI) shows it is the filter that
    refuses, not a missing capability."""
    with sandbox.image_roots() as roots:
        got, out = probe(roots.root(toolkit_61.name))
    assert got == expected(), out


def test_no_cached_filter_is_trusted(toolkit_61: ToolkitImage, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """bwrap reads the program from memory on a descriptor it closes: an allow-all
    program planted in the cache where dtk once kept its filter (`sandbox/seccomp-<hash>`)
    is never loaded, and the build inherits no descriptor beyond 0-2."""
    monkeypatch.setenv("DTK_CACHE_DIR", str(tmp_path))
    allow_all = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000)  # ret ALLOW
    digest = hashlib.sha256(seccomp.program()).hexdigest()[:16]
    planted = tmp_path / "sandbox" / f"seccomp-{digest}"
    planted.parent.mkdir()
    planted.write_bytes(allow_all)
    with sandbox.image_roots() as roots:
        got, out = probe(roots.root(toolkit_61.name))
    assert got == expected(), out
    assert out.splitlines()[-1] == "fds: 0 1 2 3", out  # 3: the listing's own
    assert planted.read_bytes() == allow_all and [p.name for p in tmp_path.iterdir()] == ["sandbox"]


def test_a_sysfs_of_its_own(toolkit_61: ToolkitImage) -> None:
    """A fresh read-only sysfs, not the host's /sys with what is mounted on it (cgroups,
    debugfs, tracefs, securityfs, bpffs, efivarfs): below /sys only the masks."""
    with sandbox.image_roots() as roots:
        out = in_sandbox(roots, toolkit_61.name, "cat /proc/self/mountinfo; "
                         "echo net: $(ls /sys/class/net); touch /sys/x 2>/dev/null || echo ro")
    mounts = {}
    for line in out.splitlines():
        fields = line.split()
        if " - " in line and fields[4].startswith("/sys"):
            fstype = line.split(" - ")[1].split()[0]
            mounts[fields[4]] = (fstype, fields[5].split(",")[0])
    assert mounts.pop("/sys") == ("sysfs", "ro"), out
    assert mounts == {path: ("tmpfs", "ro") for path in sandbox.MASKED_DIRS
                      if path.startswith("/sys/") and Path(path).is_dir()}, out
    assert out.splitlines()[-2:] == ["net: lo", "ro"], out


def test_each_build_writes_to_its_own_root(toolkit_61: ToolkitImage, tmp_path: Path) -> None:
    """A write to the root stays in that build; a volume is the only way out."""
    (tmp_path / "out").mkdir()
    with sandbox.image_roots() as roots:
        in_sandbox(roots, toolkit_61.name, "echo one > /etc/dtk-marker; rm -rf /usr/bin/make;"
                   "echo kept > /out/file", ((tmp_path / "out", "/out"),))
        after = in_sandbox(roots, toolkit_61.name,
                           "cat /etc/dtk-marker 2>&1 || true; command -v make")
        lower = roots.root(toolkit_61.name).path
        assert not (lower / "etc/dtk-marker").exists() and (lower / "usr/bin/make").exists()
    assert "No such file" in after and "/usr/bin/make" in after
    assert (tmp_path / "out/file").read_text() == "kept\n"
    assert sandbox_mounts() == []
    # The toolkit's working container went with the block.
    assert not any(f"-{os.getpid()}-" in name for _, name in buildah.containers())


def test_a_build_killed_on_timeout_leaves_nothing(toolkit_61: ToolkitImage) -> None:
    marker = "dtk-sandbox-test-sleeper"
    with sandbox.image_roots() as roots, pytest.raises(runner.CommandError, match="timed out"):
        sandbox.run(roots.root(toolkit_61.name),
                    ["bash", "-c", f"exec -a {marker} sleep 60 & wait"], timeout=2)
    assert sandbox_mounts() == []
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True,
                          check=False).stdout
    assert left == "", f"processes of the killed build still run: {left}"


@pytest.fixture(scope="module")
def base(archive: DebianArchive) -> ImageRef:
    return ensure_base(archive.index, archive.os.arch)


def test_one_layer_on_the_base(base: ImageRef, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "opt/lib/modules/K").mkdir(parents=True)
    (tree / "opt/lib/modules/K/m.ko").write_bytes(b"\x7fELF module")
    (tree / "opt/lib/modules/K/tool").write_text("#!/bin/sh\n")
    (tree / "opt/lib/modules/K/tool").chmod(0o4755)  # set-id bits never reach the image
    (tree / "opt/lib/modules/K/host").symlink_to("/host/lib/modules/K")
    names = [f"dtk-test-imagewrite-{i}:t" for i in (1, 2)]
    try:
        ids = [imagewrite.add_layer(base.name, base.image_id, tree, name,
                                    labels={"dtk.test": str(i)}, created_by="test")
               for i, name in enumerate(names)]
        local = [imagewrite.local_name(n) for n in names]
        assert local[0] == "localhost/dtk-test-imagewrite-1:t"
        assert [buildah.image_id(n) for n in local] == ids
        assert buildah.labels(local[1])["dtk.test"] == "1"
        assert buildah.labels(local[1])["dtk.build.kind"] == "base"  # the base's, kept
        layers = [buildah.diff_ids(n) for n in local]
        assert layers[0][:-1] == buildah.diff_ids(base.name)
        assert layers[0][-1] == layers[1][-1]  # the same files make the same layer
        with buildah.working_container(local[0]) as ctr:
            out = ctr.sh("ls -ln /opt/lib/modules/K").stdout
        modes = {line.split()[-1]: line.split()[:4] for line in out.splitlines()[1:]}
        assert modes["m.ko"] == ["-rw-r--r--", "1", "0", "0"]
        assert modes["tool"] == ["-rwxr-xr-x", "1", "0", "0"]
        assert "host -> /host/lib/modules/K\n" in out
        history = json.loads(buildah.inspect(local[0])["Config"])["history"]
        assert history[-1]["created_by"] == "test"
    finally:
        for name in names:
            buildah.remove_image(imagewrite.local_name(name))
