"""`dtk vmtest`: boot kernels under qemu and load a driver image like KMM's worker."""

from __future__ import annotations

from pathlib import Path

import click

from dtk.cli.common import json_option, monitor, print_json, print_table, registry_options, say
from dtk.cli.secure import secure_boot_options, secure_boot_spec
from dtk.engine import skopeo
from dtk.vm.guest import GuestConfig
from dtk.vm.qemu import ACCELS
from dtk.vm.secureboot import summary
from dtk.vm.vmtest import VmResult, VmTestSpec, image_for, vmtest


def print_results(results: list[VmResult]) -> None:
    print_table(["KERNEL", "VERDICT", "SECONDS", "ACCEL", "MODULE"],
                [[r.kernel, r.verdict.value, f"{r.seconds:.1f}", r.accel or "-",
                  r.module or "-"] for r in results])
    for r in results:  # each reason once, in full, below the table
        if r.reason:
            say(f"{r.kernel}: {r.verdict.value}: {r.reason}")
    for r in results:
        if r.boot:
            say(f"{r.kernel}: {summary(r.boot)}")
    for r in results:
        for note in r.notes:
            say(f"note: {r.kernel}: {note}")
        if r.sections.get("check"):
            say(f"check output on {r.kernel}:")
            for line in r.sections["check"].splitlines():
                say(f"  {line}")
        if r.log:
            say(f"log: {r.kernel}: {r.log}")


def _check_params(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        key, sep, _ = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{value}' is not KEY=VALUE (e.g. greeting=hello)")
    return values


@click.command("vmtest")
@click.argument("image")
@click.option("--kernel", "-k", "kernels", multiple=True, required=True, metavar="K",
              help="Kernel release to boot (repeatable; booted in parallel).")
@click.option("--module", default="", help="KMM moduleName (default: the image's only module).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              callback=lambda _c, _p, v: _check_params(v),
              help="Module parameter (KMM parameters; repeatable).")
@click.option("--modprobe-arg", "load_args", multiple=True, metavar="ARG",
              help="KMM args.load: added after the worker's own `-vd DIR` (repeatable).")
@click.option("--order", "loading_order", multiple=True, metavar="MODULE",
              help="KMM modulesLoadingOrder, first = moduleName (repeatable).")
@click.option("--remove-in-tree", "remove", multiple=True, metavar="MODULE",
              help="KMM inTreeModulesToRemove: loaded as on a node, removed by the worker.")
@click.option("--preload-in-tree", is_flag=True,
              help="Load K's in-tree modules the driver depends on before the worker runs.")
@click.option("--firmware-path", default="", metavar="PATH",
              help="KMM firmwarePath: the firmware directory inside the image.")
@click.option("--firmware-host-path", default="/var/lib/firmware", show_default=True,
              help="Where the worker copies firmware on the node.")
@click.option("--dir-name", default="/opt", show_default=True, help="KMM dirName.")
@click.option("--built-for", default="", metavar="K0",
              help="Load the modules built for K0 on every kernel booted (the upgrade "
                   "question: does the old image load on the new kernel?).")
@click.option("--check", "check_cmd", default="", metavar="CMD",
              help="Shell command run in the guest while the module is loaded.")
@click.option("--sig-enforce", is_flag=True, help="Boot with module.sig_enforce=1.")
@secure_boot_options
@click.option("--memory", default=512, show_default=True, help="Guest memory in MB.")
@click.option("--cpus", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Guest CPUs (for modules whose behaviour depends on SMP).")
@click.option("--append", default="", help="Extra kernel command line arguments.")
@click.option("--timeout", default=60.0, show_default=True, help="Hard limit per VM, seconds.")
@click.option("--keep-log", is_flag=True, help="Keep console logs and the boot kernel log.")
@click.option("--accel", type=click.Choice(ACCELS), default="auto", show_default=True,
              help="auto uses KVM only if a probe boot under KVM succeeds.")
@registry_options
@json_option
def vmtest_cmd(*, image: str, kernels: tuple[str, ...], module: str, params: tuple[str, ...],
               load_args: tuple[str, ...], loading_order: tuple[str, ...],
               remove: tuple[str, ...], preload_in_tree: bool, firmware_path: str,
               firmware_host_path: str, dir_name: str, built_for: str, check_cmd: str,
               sig_enforce: bool, secure_boot: bool, enrol: Path | None, enrol_with: str,
               vars_path: Path | None, memory: int, cpus: int, append: str, timeout: float,
               keep_log: bool, accel: str, tls_verify: bool | None, authfile: Path | None,
               as_json: bool) -> None:
    """Boot each kernel K under qemu and load IMAGE's module as KMM's worker does.

    IMAGE may contain KMM variables, e.g. 'localhost/dtk-driver/m:${KERNEL_FULL_VERSION}',
    to use one image per kernel. Exit status 0 only if every kernel loaded it.
    """
    secure = secure_boot_spec(secure_boot=secure_boot, enrol=enrol, enrol_with=enrol_with,
                              vars_path=vars_path)
    config = GuestConfig(module=module,
                         dir_name=dir_name, parameters=params,
                         load_args=load_args, loading_order=loading_order,
                         in_tree_to_remove=remove, firmware_host=firmware_host_path,
                         check=check_cmd)
    spec = VmTestSpec(image=image, kernels=kernels, guest=config, built_for=built_for,
                      firmware_path=firmware_path, preload_in_tree=preload_in_tree,
                      memory_mb=memory, cpus=cpus, append=append, sig_enforce=sig_enforce,
                      timeout_s=timeout, keep_log=keep_log, accel=accel, secure_boot=secure)
    for release in kernels:  # images only in a registry are pulled first
        name = image_for(image, built_for or release)
        if skopeo.registry_of(name) is not None:
            skopeo.ensure_local(name, tls_verify=tls_verify, authfile=authfile)
    results = vmtest(spec, monitor(as_json))
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        print_results(results)
    if not all(r.verdict.ok for r in results):
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(vmtest_cmd)
