"""Pure planning of a toolkit image: what goes in which layer, and the Containerfiles.

Three images are stacked so that toolkits of one distribution release share
everything but the kernel:

  base   a minimal root made by mmdebstrap                (dtk-base:<release>-<hash>)
  tools  the compiler and driver-build tools               (dtk-tools:<release>-<hash>)
  kernel one layer per kernel (K, then its RT sibling),    (driver-toolkit:<K>)
         gates, then the release metadata

base and tools are tagged by a hash of everything that goes into them, built
once and reused, so their layers have the same digests in every toolkit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dtk import __version__
from dtk import kernel as kern
from dtk.digest import parts_digest
from dtk.distro import Distro, KernelPackages, OsInfo, Recipe
from dtk.errors import DtkError

TOOLKIT_REPO = "localhost/driver-toolkit"
# On every image the toolkit builder makes: what `dtk toolkit prune` may remove.
KIND_LABEL = "dtk.kind"
TOOLKIT_BASE_REPO = "localhost/dtk-base"
TOOLS_REPO = "localhost/dtk-tools"
RELEASE_JSON = "/etc/driver-toolkit-release.json"
PACKAGE_LIST = "/usr/share/driver-toolkit/packages.tsv"
# Host cache directories mounted into the build (never part of a layer).
APT_ARCHIVES = "/var/cache/apt/archives"
APT_LISTS = "/var/lib/apt/lists"



@dataclass(frozen=True)
class ToolkitPlan:
    """Everything needed to build one toolkit; every tag derives from a content hash."""

    os: OsInfo
    sources_text: str
    kernel: KernelPackages
    rt: KernelPackages | None
    compiler: str
    tools: tuple[str, ...]
    archive_uri: str
    recipe: Recipe
    # 'name=version' as the archive has them now: the base and tools layers are keyed
    # by them, so an update (a new gcc, a libc security fix) rebuilds those layers.
    base_versions: tuple[str, ...] = ()
    tool_versions: tuple[str, ...] = ()

    @property
    def release(self) -> str:
        return self.kernel.release

    @property
    def rt_release(self) -> str:
        """RT_KERNEL_VERSION: the sibling, the kernel itself when it is RT, or ''."""
        if self.rt:
            return self.rt.release
        parsed = kern.parse(self.release)
        return self.release if parsed.flavour is kern.Flavour.RT else ""

    @property
    def kernels(self) -> tuple[str, ...]:
        return (self.release,) + ((self.rt.release,) if self.rt else ())

    @property
    def base_hash(self) -> str:
        return parts_digest("base", self.os.codename, self.os.arch, self.sources_text,
                            *self.base_versions)[:12]

    @property
    def base_tag(self) -> str:
        return f"{TOOLKIT_BASE_REPO}:{self.os.codename}-{self.base_hash}"

    @property
    def tools_hash(self) -> str:
        return parts_digest("tools", self.base_tag, tools_containerfile(self))[:12]

    @property
    def tools_tag(self) -> str:
        return f"{TOOLS_REPO}:{self.os.codename}-{self.tools_hash}"

    @property
    def tag(self) -> str:
        return f"{TOOLKIT_REPO}:{kern.normalize(self.release)}"

    @property
    def plan_hash(self) -> str:
        """Changes whenever any input of the final image changes."""
        return parts_digest("toolkit", self.tools_tag, kernel_containerfile(self))[:16]

    def labels(self) -> dict[str, str]:
        return {
            "io.k8s.description": "driver-toolkit is a container with the kernel packages "
                                  "necessary for building driver containers for kernel "
                                  f"{self.release}",
            "name": "driver-toolkit",
            "version": __version__,
            "kernel-version": self.release,
            "kernel-rt-version": self.rt_release,
            "org.opencontainers.image.version": self.kernel.version,
            "org.opencontainers.image.source": self.archive_uri,
            "dtk.kernels": ",".join(self.kernels),
        }


def plan_toolkit(distro: Distro, release: str, rt: str = "auto") -> ToolkitPlan:
    """Resolve a kernel (and its RT sibling) to exact packages; fail before any work.

    An RT kernel whose standard sibling the archive has is planned as that
    sibling's toolkit (which carries both), unless `rt` is 'none': one image
    serves both kernels, whichever of them the user named.
    """
    parsed = kern.parse(release)
    sibling = kern.standard_sibling(release)
    if rt == "auto" and sibling and sibling in {e.release for e in distro.kernels()}:
        return plan_toolkit(distro, sibling, release)
    kpkgs = distro.kernel_packages(release)
    rt_pkgs = _plan_rt(distro, parsed, kpkgs, rt)
    if rt_pkgs and rt_pkgs.compiler_package != kpkgs.compiler_package:
        raise DtkError(f"{release} and {rt_pkgs.release} were built by different compilers "
                       f"({kpkgs.compiler_package} vs {rt_pkgs.compiler_package})",
                       hint="build them as separate toolkits with --rt-kernel none")
    tools = tuple(sorted({*distro.tool_packages(), kpkgs.compiler_package}))
    uris = [line.split(":", 1)[1].strip() for line in distro.sources_text().splitlines()
            if line.startswith("URIs:")]
    return ToolkitPlan(distro.os, distro.sources_text(), kpkgs, rt_pkgs,
                       kpkgs.compiler_package, tools, uris[0].split()[0] if uris else "",
                       distro.recipe, distro.package_versions(distro.base_packages()),
                       distro.package_versions(tools))


def _plan_rt(distro: Distro, parsed: kern.KernelRelease, kpkgs: KernelPackages,
             rt: str) -> KernelPackages | None:
    if rt == "none":
        return None
    if rt == "auto":
        sibling = parsed.rt_sibling()
        if sibling is None or sibling not in {e.release for e in distro.kernels()}:
            return None
    else:
        sibling = rt
        if kern.parse(sibling).flavour is not kern.Flavour.RT:
            raise DtkError(f"--rt-kernel {sibling} is not a real-time kernel",
                           hint="give an rt release such as 6.1.0-56-rt-amd64, or auto/none")
    rt_pkgs = distro.kernel_packages(sibling)
    if rt_pkgs.version != kpkgs.version:
        raise DtkError(
            f"{kpkgs.release} ({kpkgs.version}) and {sibling} ({rt_pkgs.version}) come from "
            "different source versions",
            hint="a toolkit pairs a kernel with the RT kernel of the same source; pass "
                 "--rt-kernel none or the matching RT release")
    return rt_pkgs


def base_containerfile(plan: ToolkitPlan) -> str:
    return (
        f"# dtk base for {plan.os.id} {plan.os.codename} ({plan.os.arch})\n"
        f"# rootfs.tar is made by: {plan.recipe.base_note(plan.os)}\n"
        f"# keyed by (a new version rebuilds it): {' '.join(plan.base_versions)}\n"
        "FROM scratch\n"
        "ADD rootfs.tar /\n"
        'CMD ["/bin/bash"]\n'
    )


def tools_containerfile(plan: ToolkitPlan) -> str:
    after = plan.recipe.after_tools()
    return (
        f"# dtk tools layer: compiler and tools shared by every {plan.os.codename} toolkit.\n"
        f"# {APT_ARCHIVES} and {APT_LISTS} are host cache volumes, not layers.\n"
        f"# resolved now (they key this layer): {' '.join(plan.tool_versions)}\n"
        f"FROM {plan.base_tag}\n"
        f"RUN {plan.recipe.install(plan.tools)}"
        + (f" \\\n    && {after}\n" if after else "\n")
    )


def _install_run(plan: ToolkitPlan, pkgs: KernelPackages) -> str:
    specs = [p.spec for p in pkgs.packages]
    return f"# kernel {pkgs.release}\nRUN {plan.recipe.install(specs, downgrades=True)}\n"


def _version_gate(plan: ToolkitPlan) -> str:
    wanted = [p for k in (plan.kernel, plan.rt) if k for p in k.packages]
    specs = " ".join(sorted({p.spec for p in wanted}))
    names = " ".join(sorted({p.name for p in wanted}))
    return (
        "# gate: every kernel package at exactly the planned version, and no other kernel\n"
        f"RUN for want in {specs}; do \\\n"
        "      pkg=\"${want%%=*}\"; ver=\"${want#*=}\"; \\\n"
        f"      have=\"$({plan.recipe.installed_version()})\"; \\\n"
        "      if [ \"$have\" != \"$ver\" ]; then \\\n"
        "        echo \"dtk gate: $pkg is ${have:-not installed}, the toolkit asks for "
        "$ver\" >&2; exit 1; fi; \\\n"
        "    done; \\\n"
        f"    for pkg in $({plan.recipe.installed_kernel_packages()}); do \\\n"
        f"      case \" {names} \" in *\" $pkg \"*) ;; *) \\\n"
        "        echo \"dtk gate: unexpected kernel package $pkg is installed\" >&2; exit 1;; "
        "esac; \\\n"
        "    done\n"
    )


def _compiler_gate(release: str) -> str:
    return (
        f"# gate: the compiler that built {release}, exactly (CONFIG_CC_VERSION_TEXT)\n"
        "RUN want=\"$(sed -n 's/^CONFIG_CC_VERSION_TEXT=\"\\(.*\\)\"$/\\1/p' "
        f"/boot/config-{release})\"; \\\n"
        "    cc=\"${want%% *}\"; have=\"$($cc --version 2>/dev/null | head -n1)\"; \\\n"
        "    if [ -z \"$want\" ] || [ \"$want\" != \"$have\" ]; then \\\n"
        f"      echo \"dtk gate: {release} was built with '$want' but the toolkit has "
        "'$have'\" >&2; exit 1; fi\n"
    )


def _metadata_run(plan: ToolkitPlan) -> str:
    fmt = json.dumps({
        "KERNEL_VERSION": plan.release, "RT_KERNEL_VERSION": plan.rt_release,
        "OS_ID": "%s", "OS_VERSION_ID": "%s", "ARCH": "%s",
        "KERNEL_PACKAGE_VERSION": plan.kernel.version, "GCC_VERSION": "%s",
    }, indent=2).replace("\n", "\\n")
    return (
        "# the Driver Toolkit's release file, and every installed package with its version\n"
        f"RUN . /etc/os-release && gcc_version=\"$({plan.compiler} -dumpfullversion)\" && \\\n"
        f"    printf '{fmt}\\n' \"$ID\" \"$VERSION_ID\" \"$({plan.recipe.arch()})\" "
        f"\"$gcc_version\" > {RELEASE_JSON} && \\\n"
        f"    mkdir -p {PACKAGE_LIST.rsplit('/', 1)[0]} && \\\n"
        f"    {plan.recipe.package_list()} > {PACKAGE_LIST}\n"
    )


def kernel_containerfile(plan: ToolkitPlan) -> str:
    labels = " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in plan.labels().items())
    parts = [
        f"# driver toolkit for {plan.release}"
        + (f" and its RT sibling {plan.rt.release}" if plan.rt else "") + "\n",
        f"FROM {plan.tools_tag}\n",
        _install_run(plan, plan.kernel),
    ]
    if plan.rt:
        parts.append(_install_run(plan, plan.rt))
    parts.append(_version_gate(plan))
    parts += [_compiler_gate(k) for k in plan.kernels]
    parts.append(_metadata_run(plan))
    parts.append(f"LABEL {labels}\n")
    notes = [n for k in (plan.kernel, plan.rt) if k for n in k.notes]
    if notes:
        parts.insert(1, "".join(f"# note: {n}\n" for n in dict.fromkeys(notes)))
    return "".join(parts)
