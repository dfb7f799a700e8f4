"""How a Debian-family toolkit installs and queries packages: shell fragments for
Containerfiles, and the command that makes the base root. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dtk.distro import OsInfo

_INSTALL = ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
            "-o Dpkg::Use-Pty=0")
_JOIN = " \\\n      "


class AptRecipe:
    """apt/dpkg. The RPM family's recipe has the same methods over dnf/rpm."""

    def base_command(self, os: OsInfo, sources: Path, out: Path) -> list[str]:
        return ["mmdebstrap", "--variant=minbase", f"--arch={os.arch}", "--quiet",
                os.codename, str(out), str(sources)]

    def base_note(self, os: OsInfo) -> str:
        return (f"mmdebstrap --variant=minbase --arch={os.arch} {os.codename} rootfs.tar "
                "- < sources")

    def install(self, specs: Sequence[str], *, downgrades: bool = False) -> str:
        # Downgrades are allowed for kernels because an older ABI pins linux-libc-dev and
        # friends below what the tools layer pulled in; apt only downgrades what is pinned.
        flag = " --allow-downgrades" if downgrades else ""
        return f"apt-get update -q && {_INSTALL}{flag}{_JOIN}{_JOIN.join(specs)}"

    def after_tools(self) -> str:
        # Kernel packages would otherwise build an initramfs per kernel: useless in a
        # build container, slow, and hundreds of MB. The divert keeps dpkg consistent.
        return ("dpkg-divert --local --rename --add /usr/sbin/update-initramfs \\\n"
                "    && ln -s /bin/true /usr/sbin/update-initramfs")

    def installed_version(self) -> str:
        """Shell printing the installed version of "$pkg", or nothing."""
        return "dpkg-query -W -f='${Version}' \"$pkg\" 2>/dev/null || true"

    def installed_kernel_packages(self) -> str:
        return ("dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n' "
                "'linux-image-*' 'linux-headers-*' | awk '$1 ~ /^ii/ {print $2}'")

    def package_list(self) -> str:
        """Shell printing name<TAB>version<TAB>arch for every installed package."""
        return "dpkg-query -W -f='${Package}\\t${Version}\\t${Architecture}\\n' | sort"

    def arch(self) -> str:
        return "dpkg --print-architecture"
