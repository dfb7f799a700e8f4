"""`dtk demo`: the whole product on the example driver, end to end, for real.

newest Debian kernel K and its RT sibling → their toolkit → the example driver
built for both → signed (a demo key) → checked statically → both kernels booted
under qemu, the module loaded KMM's way and /dev/dtk_example read → the
negative proof: K's module booted on the RT kernel, refused by the kernel
itself. Every step is the product's own code; a step that fails stops the demo
and says so (later steps need its output), and nothing is ever faked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dtk
from dtk import kernel as kern
from dtk import paths
from dtk.distro.debian import DebianArchive
from dtk.distro.select import open_archive
from dtk.driver import sources as build_sources
from dtk.driver.base import ensure_base
from dtk.driver.matrix import RunOptions, run_matrix
from dtk.driver.naming import DEFAULT_TEMPLATE
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import BuildOptions, ImageRef, plan_matrix
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.kernel import keyring
from dtk.kmod import check as chk
from dtk.kmod import image, keygen, sign
from dtk.kmod.targets import check_target
from dtk.progress import Monitor
from dtk.toolkit import locate
from dtk.toolkit.images import ToolkitImage, ensure_toolkit
from dtk.vm.guest import GuestConfig
from dtk.vm.vmtest import VmResult, VmTestSpec, vmtest

EXAMPLE_NAME = "dtk-example"
GREETING = "hello from the dtk demo"
SIGNED_SUFFIX = "-signed"


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    status: str = "not run"
    detail: str = ""


@dataclass
class DemoReport:
    kernel: str = ""
    rt_kernel: str = ""
    steps: list[Step] = field(default_factory=list)
    images: list[tuple[str, str, int]] = field(default_factory=list)  # (role, name, bytes)
    checks: list[tuple[str, str, bool, str]] = field(default_factory=list)  # img, K, loads, why
    boots: list[VmResult] = field(default_factory=list)
    negative: VmResult | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        boots_ok = len(self.boots) == 2 and all(
            b.verdict.ok and GREETING in b.sections.get("check", "") for b in self.boots)
        negative_ok = self.negative is not None and not self.negative.verdict.ok
        return boots_ok and negative_ok and all(s.status == "ok" for s in self.steps)


def example_dir() -> Path:
    """The example driver kept in the repository next to the package."""
    path = Path(dtk.__file__).resolve().parent.parent / "examples" / EXAMPLE_NAME
    if not (path / "Containerfile").is_file():
        raise DtkError(f"the example driver is not at {path}",
                       hint="run 'dtk demo' from a checkout of the dtk repository "
                            "(make demo)")
    return path


def pick_kernels(archive: DebianArchive) -> tuple[str, str]:
    """The newest standard kernel in the archive and its RT sibling."""
    catalog = archive.kernels()
    standard = [e for e in catalog if e.flavour == "standard" and e.has_headers]
    if not standard:
        raise DtkError("the archive has no standard kernel with headers")
    newest = max(standard, key=lambda e: kern.parse(e.release).sort_key).release
    rt = kern.parse(newest).rt_sibling()
    if rt is None or rt not in {e.release for e in catalog}:
        raise DtkError(f"the archive has no RT sibling of {newest}",
                       hint="the demo needs a kernel with a real-time flavour")
    return newest, rt


@contextmanager
def _step(report: DemoReport, name: str, monitor: Monitor) -> Iterator[Step]:
    step = Step(name)
    report.steps.append(step)
    monitor.step(f"== {name}")
    start = time.monotonic()
    try:
        yield step
        step.status = "ok"
    except DtkError as exc:
        step.status = "failed"
        step.detail = exc.message
        raise
    finally:
        step.seconds = time.monotonic() - start


def run_demo(report: DemoReport, monitor: Monitor, *, vm_timeout_s: float = 90.0) -> None:
    """Run every step into `report`; on a failure the report says where, and the
    error is raised (so the caller prints the report either way)."""
    start = time.monotonic()
    try:
        _run_steps(report, monitor, vm_timeout_s)
    finally:
        report.seconds = time.monotonic() - start


def _run_steps(report: DemoReport, monitor: Monitor, vm_timeout_s: float) -> None:
    with _step(report, "pick kernels", monitor) as step:
        archive = open_archive()
        report.kernel, report.rt_kernel = pick_kernels(archive)
        step.detail = f"{report.kernel} and {report.rt_kernel}"
    kernels = [report.kernel, report.rt_kernel]
    with _step(report, "toolkit", monitor) as step:
        toolkit = ensure_toolkit(report.kernel, "auto", distro=archive, monitor=monitor)
        _require(report.rt_kernel in toolkit.kernels, f"{toolkit.name} lacks the RT kernel")
        report.images.append(("toolkit", toolkit.name, 0))
        step.detail = toolkit.name
    with _step(report, "build example driver", monitor) as step:
        built = _build_example(kernels, toolkit, archive, monitor)
        report.images += [("driver", o.image, 0) for o in built]
        step.detail = ", ".join(("cache hit" if o.cached else "built") + f" {o.kernel}"
                                for o in built)
    with _step(report, "sign", monitor) as step:
        signed, cert = _sign(built, monitor)
        report.images += [("signed driver", name, 0) for name in signed]
        report.images = _with_sizes(report.images)
        step.detail = f"demo key {cert}"
    with _step(report, "check (static)", monitor) as step:
        report.checks = _checks(signed, kernels, cert)
        step.detail = "; ".join(f"{k}: {'loads' if ok else 'refused'}"
                                for _i, k, ok, _w in report.checks)
    _boot_steps(report, kernels, vm_timeout_s, monitor)


def _with_sizes(images: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Exact sizes (`buildah images` rounds to three digits), as `toolkit list` shows."""
    return [(role, name, buildah.image_size(name)) for role, name, _ in images]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DtkError(message)


def _build_example(kernels: list[str], toolkit: ToolkitImage, archive: DebianArchive,
                   monitor: Monitor) -> list[Outcome]:
    source = build_sources.containerfile_source(example_dir() / "Containerfile", None,
                                                EXAMPLE_NAME)
    ref = ImageRef(toolkit.name, toolkit.image_id)
    base = ensure_base(archive.index, archive.os.arch)
    matrix = plan_matrix([source], kernels, dict.fromkeys(kernels, ref), base,
                         BuildOptions(DEFAULT_TEMPLATE))
    log_dir = paths.state_dir() / "demo" / "build"
    outcomes = run_matrix(matrix, RunOptions(len(kernels), log_dir), monitor)
    failed = [o for o in outcomes if o.status is not Status.BUILT]
    if failed:
        raise DtkError(f"building the example for {failed[0].kernel} failed: "
                       f"{failed[0].reason}", hint=f"log: {failed[0].log}")
    return outcomes


def _sign(built: list[Outcome], monitor: Monitor) -> tuple[list[str], Path]:
    """KMM's sign step with a demo key kept outside any image (state dir, 0600)."""
    keys = paths.state_dir() / "demo" / "keys"
    files = keygen.KeyFiles(keys / "signing_key.pem", keys / "signing_cert.pem",
                            keys / "signing_cert.der")
    if not files.key.exists():
        files = keygen.keygen(keys, "dtk demo module signing key")
    signer = sign.make_signer(files.key, files.cert_pem)
    signed = []
    for outcome in built:
        output = outcome.image + SIGNED_SUFFIX
        signed.append(output)
        if _signed_from(output, outcome.image, files.cert_pem):
            monitor.step(f"{output} is already signed from {outcome.image}")
            continue
        result = image.sign_image(outcome.image, output,
                                  ["/opt/lib/modules/$KERNEL_FULL_VERSION/extra/*.ko"],
                                  outcome.kernel, signer=signer)
        monitor.step(f"signed {', '.join(result.files)} into {output}")
    return signed, files.cert_pem


def _signed_from(signed: str, unsigned: str, cert: Path) -> bool:
    """Whether `signed` is `unsigned` plus one layer whose modules all verify with
    `cert`: then signing again would only produce the same image."""
    if not buildah.image_exists(signed):
        return False
    base = buildah.diff_ids(unsigned)
    layers = buildah.diff_ids(signed)
    if layers[:-1] != base:
        return False
    groups = image.read_modules(signed, cert=keyring.load_cert(cert))
    loaded = [item for items in groups.values() for item in items]
    return bool(loaded) and all(i.trust is chk.SignatureTrust.TRUSTED for i in loaded)


def _checks(signed: list[str], kernels: list[str],
            cert: Path) -> list[tuple[str, str, bool, str]]:
    """Each signed image against its own kernel, and K's against the RT kernel."""
    certificate = keyring.load_cert(cert)
    pairs = [(signed[0], kernels[0]), (signed[1], kernels[1]), (signed[0], kernels[1])]
    rows = []
    for name, release in pairs:
        verdicts = check_target(image.read_image_index(name, cert=certificate),
                                locate.kernel_facts(release), chk.Policy())
        refusals = [f.message for v in verdicts for f in v.refusals]
        rows.append((name, release, not refusals, refusals[0] if refusals else ""))
    return rows


def _boot_steps(report: DemoReport, kernels: list[str], timeout_s: float,
                monitor: Monitor) -> None:
    template = f"{DEFAULT_TEMPLATE.replace('${MOD_NAME}', EXAMPLE_NAME)}{SIGNED_SUFFIX}"
    config = GuestConfig(module="dtk_example", parameters=(f'greeting="{GREETING}"',),
                         check="cat /dev/dtk_example")
    with _step(report, "boot both kernels, load, read /dev/dtk_example", monitor) as step:
        report.boots = vmtest(VmTestSpec(template, tuple(kernels), config,
                                         timeout_s=timeout_s), monitor)
        step.detail = "; ".join(f"{b.kernel}: {b.verdict.value}" for b in report.boots)
        bad = [b for b in report.boots
               if not b.verdict.ok or GREETING not in b.sections.get("check", "")]
        _require(not bad, f"{bad[0].kernel}: {bad[0].verdict.value} {bad[0].reason}"
                 if bad else "")
    with _step(report, "negative proof", monitor) as step:
        spec = VmTestSpec(template, (kernels[1],), config, built_for=kernels[0],
                          timeout_s=timeout_s)
        report.negative = vmtest(spec, monitor)[0]
        step.detail = f"{report.negative.verdict.value}: {report.negative.reason}"
        _require(not report.negative.verdict.ok,
                 f"the module built for {kernels[0]} loaded on {kernels[1]}")

