"""`dtk demo`: the README's first command (`make demo`)."""

from __future__ import annotations

import click

from dtk.cli.common import human_size, monitor, print_table, say
from dtk.demo import DemoReport, run_demo


def print_report(report: DemoReport) -> None:
    say(f"\ndtk demo: {report.kernel} and its RT sibling {report.rt_kernel}\n")
    print_table(["STEP", "SECONDS", "STATUS", "DETAIL"],
                [[s.name, f"{s.seconds:.1f}", s.status, s.detail] for s in report.steps])
    if report.images:
        say("")
        print_table(["WHAT", "IMAGE", "SIZE"],
                    [[role, name, human_size(size)] for role, name, size in report.images])
    if report.checks:
        say("")
        print_table(["CHECK (static)", "KERNEL", "VERDICT (predicted)"],
                    [[img, k, "loaded" if ok else "refused"] for img, k, ok, _ in report.checks])
        for img, k, _ok, why in report.checks:  # in full, below the table: it fits there
            if why:
                say(f"  why, {img} on {k}: {why}")
    boots = [*report.boots, *([report.negative] if report.negative else [])]
    if boots:
        say("")
        print_table(["VM", "IMAGE", "VERDICT", "SECONDS"],
                    [[b.kernel, b.image, b.verdict.value, f"{b.seconds:.1f}"] for b in boots])
        for b in boots:
            said = b.sections.get("check", "").strip() if b.verdict.ok else b.reason
            if said:
                say(f"  {b.kernel} says: " + said.replace("\n", "\n    "))
    if any("signature" in b.reason for b in report.boots):
        say("\nnote: the signed modules load with a taint because the demo key is not "
                   "enrolled in these kernels' keyrings (a VM has no MOK); on a Secure Boot "
                   "node, enrol it first: dtk keygen prints the mokutil step.")
    say(f"\ntotal {report.seconds:.0f}s — "
               + ("every step passed" if report.ok else "the demo did NOT pass"))


@click.command("demo")
@click.option("--vm-timeout", default=90.0, show_default=True,
              help="Hard limit per VM, seconds.")
def demo_cmd(vm_timeout: float) -> None:
    """Toolkit → build → sign → check → boot and load, on the newest Debian kernel
    and its RT sibling, with the example driver; then the negative proof."""
    report = DemoReport()
    try:
        run_demo(report, monitor(False), vm_timeout_s=vm_timeout)
    finally:
        print_report(report)
    if not report.ok:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(demo_cmd)
