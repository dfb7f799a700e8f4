"""Build (or reuse) toolkit images with buildah. Execution only: see plan.py for what.

Builds are serialised by a host lock: they share the APT cache, and apt takes an
exclusive lock on it. Reuse is decided by the `dtk.plan` label, a hash of every
input of the image, so an unchanged toolkit is never rebuilt.
"""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dtk import paths
from dtk import run as runner
from dtk.distro import Distro
from dtk.distro.select import open_archive
from dtk.engine import buildah, made
from dtk.errors import DtkError
from dtk.lock import locked
from dtk.progress import Monitor, NullMonitor
from dtk.toolkit import plan as tplan
from dtk.toolkit.plan import ToolkitPlan

_BASE_TIMEOUT_S = 900
_TOOLS_TIMEOUT_S = 1800
_KERNEL_TIMEOUT_S = 2400


@dataclass(frozen=True)
class ToolkitImage:
    """A built toolkit in local container storage."""

    name: str
    image_id: str
    kernel: str
    rt_kernel: str | None

    @property
    def kernels(self) -> tuple[str, ...]:
        return (self.kernel,) + ((self.rt_kernel,) if self.rt_kernel else ())


def ensure_toolkit(release: str, rt: str = "auto", *, distro: Distro | None = None,
                   monitor: Monitor | None = None, rebuild: bool = False) -> ToolkitImage:
    """The toolkit for `release`, built only if missing or stale."""
    distro = distro or open_archive()
    monitor = monitor or NullMonitor()
    plan = tplan.plan_toolkit(distro, release, rt)
    # Checked before the lock too, so a current toolkit never waits behind another
    # kernel's build; checked again under it, since that build may be this one.
    if not rebuild and is_current(plan):
        monitor.step(f"toolkit {plan.tag} is up to date")
    else:
        with locked(paths.cache_dir() / "locks" / "toolkit-build", "toolkit-build"):
            if rebuild or not is_current(plan):
                build(plan, monitor, rebuild=rebuild)
    return ToolkitImage(plan.tag, buildah.image_id(plan.tag), plan.release,
                        plan.rt.release if plan.rt else None)


def is_current(plan: ToolkitPlan) -> bool:
    """The plan's toolkit is in local storage, built from exactly these inputs."""
    return buildah.image_exists(plan.tag) and buildah.labels(plan.tag).get("dtk.plan") \
        == plan.plan_hash


def build(plan: ToolkitPlan, monitor: Monitor, *, rebuild: bool = False) -> str:
    """Build base, tools and kernel images as needed (all three with `rebuild`);
    return the toolkit's image id."""
    logs = paths.state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"toolkit-{plan.release}.log"
    log_file.write_text("")
    _ensure_base(plan, monitor, log_file, rebuild)
    _ensure_tools(plan, monitor, log_file, rebuild)
    monitor.step(f"installing {', '.join(plan.kernels)} into {plan.tag}")
    labels = {"dtk.plan": plan.plan_hash, tplan.KIND_LABEL: "toolkit",
              "org.opencontainers.image.created":
                  datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    image = _bud(plan, tplan.kernel_containerfile(plan), plan.tag, monitor, log_file,
                 labels=labels, layers=True, timeout=_KERNEL_TIMEOUT_S)
    monitor.step(f"built {plan.tag} ({image[:12]}); log: {log_file}")
    return image


def _cache_volumes(plan: ToolkitPlan) -> list[str]:
    root = paths.cache_dir() / "apt" / f"{plan.os.id}-{plan.os.codename}-{plan.os.arch}"
    archives = root / "archives"
    lists = root / "lists"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    return [f"{archives}:{tplan.APT_ARCHIVES}", f"{lists}:{tplan.APT_LISTS}"]


def _bud(plan: ToolkitPlan, containerfile: str, tag: str, monitor: Monitor, log_file: Path,
         *, labels: dict[str, str] | None = None, layers: bool = False,
         timeout: float, context_files: dict[str, Path] | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="dtk-ctx-") as tmp:
        ctx = Path(tmp)
        (ctx / "Containerfile").write_text(containerfile)
        for name, source in (context_files or {}).items():
            (ctx / name).hardlink_to(source)
        spec = buildah.BuildSpec(ctx / "Containerfile", ctx, tag, labels=labels or {},
                                 volumes=_cache_volumes(plan), layers=layers,
                                 timeout=timeout)
        try:
            image_id = buildah.bud(spec, log_file=log_file, on_line=monitor.detail)
        except runner.CommandError as exc:
            raise DtkError(_gate_message(exc) or f"building {tag} failed\n{exc.tail}",
                           hint=f"the full log is {log_file}") from None
    made.record(image_id, tag, (labels or {}).get(tplan.KIND_LABEL, "toolkit"))
    return image_id


def _gate_message(exc: runner.CommandError) -> str | None:
    gates = [line.strip() for line in exc.tail.splitlines() if "dtk gate:" in line]
    return gates[-1].replace("dtk gate: ", "toolkit gate failed: ") if gates else None


def _ensure_base(plan: ToolkitPlan, monitor: Monitor, log_file: Path, rebuild: bool) -> None:
    if not rebuild and buildah.image_exists(plan.base_tag):
        return
    monitor.step(f"creating base root {plan.base_tag}")
    work = paths.cache_dir() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dtk-base-", dir=work) as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        sources = Path(tmp) / "sources"
        sources.write_text(plan.sources_text)
        runner.stream(plan.recipe.base_command(plan.os, sources, tarball),
                      timeout=_BASE_TIMEOUT_S, log_file=log_file, on_line=monitor.detail,
                      what="could not create the base root")
        _bud(plan, tplan.base_containerfile(plan), plan.base_tag, monitor, log_file,
             labels={tplan.KIND_LABEL: "toolkit-base"}, timeout=_BASE_TIMEOUT_S,
             context_files={"rootfs.tar": tarball})


def _ensure_tools(plan: ToolkitPlan, monitor: Monitor, log_file: Path, rebuild: bool) -> None:
    if not rebuild and buildah.image_exists(plan.tools_tag):
        return
    monitor.step(f"installing {plan.compiler} and the driver-build tools into {plan.tools_tag}")
    _bud(plan, tplan.tools_containerfile(plan), plan.tools_tag, monitor, log_file,
         labels={tplan.KIND_LABEL: "toolkit-tools"},
         timeout=_TOOLS_TIMEOUT_S)
