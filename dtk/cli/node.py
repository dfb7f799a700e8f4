"""`dtk node`: driver containers on a machine without Kubernetes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from dtk.cli.common import TLS_HELP, json_option, print_json, print_table, say, stderr, table_width
from dtk.errors import DtkError
from dtk.node import agent, declare, enroll, hooks, hostkeys, prepare
from dtk.node.layout import Layout, check_release
from dtk.node.verify import host_policy

F = TypeVar("F", bound=Callable[..., Any])


def root_option(func: F) -> F:
    return click.option("--root", type=click.Path(path_type=Path, file_okay=False,
                                                  exists=True),
                        default=None,
                        help="Act on the system under this directory instead of / (also "
                             "DTK_NODE_ROOT): /etc/dtk, /var/lib/dtk, /etc/containers, "
                             "/boot, /lib/modules, /proc/cmdline and /sys/kernel/security "
                             "are read and written under it; nothing is loaded or unloaded "
                             "and this machine's kernel is never asked (--kernel is "
                             "needed).")(func)


def _release(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """--kernel values checked before anything is done (they name directories)."""
    try:
        if isinstance(value, tuple):
            return tuple(check_release(v) for v in value)
        return check_release(value) if value else value
    except DtkError as exc:
        raise click.BadParameter(exc.message) from None


def kernel_option(help_text: str, *, required: bool = False) -> Callable[[F], F]:
    return click.option("--kernel", default=None, metavar="RELEASE", required=required,
                        callback=_release, help=help_text)


@click.group("node")
def node_group() -> None:
    """Driver containers on a machine without Kubernetes: declare modules once; each
    new kernel's images are fetched and checked when its package is installed, and
    loaded at boot the way KMM's worker loads them."""


def _image_bundle(image: str, module_name: str | None, params: tuple[str, ...], *,
                  name: str | None, tls_verify: bool | None, auth: Path | None,
                  layout: Layout) -> Any:
    if not module_name:
        raise DtkError("IMAGE needs --module NAME (the module modprobe loads)")
    decl_name = name or module_name.replace("_", "-").lower()
    secret = f"{decl_name}-pull" if auth else None
    docs = [declare.image_module(image, module_name, params, decl_name,
                                 insecure=tls_verify is False, secret=secret,
                                 machine=layout.is_machine)]
    if auth is not None and secret is not None:
        docs.append(declare.pull_secret(secret, image, auth))
    return declare.image_bundle(*docs)


@node_group.command("add")
@click.argument("image", required=False)
@click.option("-f", "--filename", "files", multiple=True,
              type=click.Path(path_type=Path, exists=True),
              help="KMM Module file(s), as `dtk module` and kubectl take them.")
@click.option("--module", "module_name", default=None, metavar="NAME",
              help="With IMAGE: the module modprobe loads (moduleName).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="With IMAGE: a module parameter (repeatable).")
@click.option("--name", default=None, help="With IMAGE: the declaration's name "
              "(default: the module name with '_' as '-').")
@click.option("--kernel", "kernels", multiple=True, metavar="RELEASE", callback=_release,
              help="Kernel(s) the declaration must resolve for (default: the running one).")
@click.option("--replace", is_flag=True,
              help="Replace a declaration of the same name (else that is an error); what "
                   "was prepared and pinned for the old one is dropped.")
@click.option("--require-signature", is_flag=True,
              help="Fetch the module's images only where the host's containers policy "
                   "(/etc/containers/policy.json) requires them to be signed; skopeo "
                   "verifies the signatures.")
@click.option("--cert", "certs", multiple=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A certificate (PEM or DER) this host's kernel trusts for module signatures, "
                   "for hosts whose firmware keys cannot be read (no efivarfs); repeatable, "
                   "kept in the declaration.")
@click.option("--authfile", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="With IMAGE: registry credentials (containers-auth.json); "
              "the entry for IMAGE's registry is kept in the declaration (0600).")
@click.option("--tls-verify/--no-tls-verify", "tls_verify", default=None,
              help=f"With IMAGE: {TLS_HELP}")
@root_option
@json_option
def add_cmd(*, image: str | None, files: tuple[Path, ...], module_name: str | None,
            params: tuple[str, ...], name: str | None, kernels: tuple[str, ...],
            replace: bool, require_signature: bool, certs: tuple[Path, ...],
            authfile: Path | None,
            tls_verify: bool | None, root: Path | None, as_json: bool) -> None:
    """Declare a module: `-f MODULE.yaml`, or `IMAGE --module NAME` (IMAGE may hold
    ${KERNEL_FULL_VERSION}; oci-archive:PATH and oci:DIR work without a registry: make
    one with `skopeo copy containers-storage:IMAGE oci-archive:PATH`)."""
    layout = Layout.from_env(root)
    if bool(image) == bool(files):
        raise DtkError("give either -f MODULE.yaml or IMAGE --module NAME",
                       hint="dtk node add -f module.yaml, or dtk node add "
                            "reg/img:${KERNEL_FULL_VERSION} --module my_driver")
    if image:
        bundle = _image_bundle(image, module_name, params, name=name, tls_verify=tls_verify,
                               auth=authfile, layout=layout)
    else:
        if module_name or params or name or authfile or tls_verify is not None:
            raise DtkError("--module, --param, --name, --authfile and --tls-verify go with "
                           "IMAGE, not -f",
                           hint="set moduleName, parameters, imageRepoSecret and "
                                "registryTLS in the Module file")
        bundle = declare.read_file_bundle(files)
    settings = declare.Settings(require_signature,
                                tuple(enroll.certificate(c) for c in certs))
    with layout.locked():
        added = agent.add(layout, bundle, kernels or (layout.running_kernel(),),
                          replace=replace, settings=settings)
        hooks.install(layout)
    if as_json:
        print_json([declare.to_json(d) for d in added])
        return
    for decl in added:
        say(f"declared {decl.name} ({decl.module_name}) in {decl.path}")


@node_group.command("list")
@root_option
@json_option
def list_cmd(root: Path | None, as_json: bool) -> None:
    """The declared modules (exit 1 if a declaration no longer reads)."""
    layout = Layout.from_env(root)
    rows: list[dict[str, Any]] = []
    for name in declare.names(layout):
        try:
            rows.append(declare.to_json(declare.find(layout, name)))
        except DtkError as exc:
            rows.append({"name": name, "file": str(layout.declaration(name)),
                         "error": exc.message})
    if as_json:
        print_json(rows)
    else:
        print_table(["NAME", "MODULE", "IMAGE"],
                    [(r["name"], r.get("moduleName", "-"),
                      f"does not read: {r['error']}" if "error" in r else
                      ", ".join(m["containerImage"] for m in r["kernelMappings"]))
                     for r in rows])
    if any("error" in r for r in rows):
        raise SystemExit(1)


@node_group.command("remove")
@click.argument("name")
@root_option
@json_option
def remove_cmd(name: str, root: Path | None, as_json: bool) -> None:
    """Unload a declared module (KMM's way) and forget it and all dtk derived from it."""
    layout = Layout.from_env(root)
    with layout.locked():
        unloaded = agent.remove(layout, name)
    if as_json:
        print_json({"removed": name, "unloaded": unloaded})
    elif not layout.is_machine:
        say(f"removed {name} (nothing unloaded: --root is not the running machine)")
    else:
        say(f"removed {name}" + (" (unloaded)" if unloaded else ""))


@node_group.command("prepare")
@kernel_option("The kernel to prepare for (default: the running one).")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a module is not ready (default: always 0, so that a kernel "
                   "package's installation never fails because of a driver).")
@click.option("--refresh", is_flag=True,
              help="Ask each registry again what the tags name now (pinned digests are "
                   "kept otherwise) and say which moved.")
@root_option
@json_option
def prepare_cmd(kernel: str | None, strict: bool, refresh: bool, root: Path | None,
                as_json: bool) -> None:
    """Fetch, unpack and check every declared module's image for KERNEL."""
    layout = Layout.from_env(root)
    release = kernel or layout.running_kernel()
    with layout.locked():
        outcomes = prepare.prepare(layout, release, on_outcome=None if as_json
                                   else lambda o: say(o.line()), refresh=refresh)
    if as_json:
        print_json([o.to_json() for o in outcomes])
    if strict and not all(o.ready for o in outcomes):
        raise SystemExit(1)


def _age(stamp: str) -> str:
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return ""
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _pinned(outcome: prepare.Outcome) -> str:
    if not outcome.pinned:
        return "-"
    age = _age(outcome.pinned_at)
    return outcome.pinned[:19] + (f" ({age})" if age else "")


@node_group.command("status")
@kernel_option("The kernel to ask about (default: the running one).")
@root_option
@json_option
def status_cmd(kernel: str | None, root: Path | None, as_json: bool) -> None:
    """Will each declared module load on KERNEL? yes/no and why, from `prepare`; for the
    kernel it was last loaded on, whether the boot loaded it (and why not). Exit 1 when
    one will not load."""
    layout = Layout.from_env(root)
    release = kernel or layout.running_kernel()
    outcomes = prepare.status(layout, release)
    loads = {o.name: agent.loaded_record(layout, o.name) for o in outcomes}
    loaded = {name: r for name, r in loads.items() if r is not None and r.kernel == release}
    if as_json:
        print_json([o.to_json() | {"loaded": asdict(loaded[o.name]) if o.name in loaded
                                   else None} for o in outcomes])
    else:
        rows = [(o.name, o.kernel, "yes" if o.ready else "no",
                 ("yes" if loaded[o.name].loaded else "no") if o.name in loaded else "-",
                 _pinned(o),
                 o.reason if o.name not in loaded or loaded[o.name].loaded
                 else loaded[o.name].reason) for o in outcomes]
        print_table(["NAME", "KERNEL", "READY", "LOADED", "PINNED", "REASON"], rows)
        widest = max((sum(len(str(c)) + 2 for c in row) for row in rows), default=0)
        if widest > table_width():
            say("(cut to fit: dtk node status --json has every reason whole)")
        enrolment, record = enroll.state(layout)
        if enrolment is not enroll.State.NONE:
            say(f"MOK enrolment {enrolment}: {enroll.next_step(enrolment, record)}")
    if not all(o.ready for o in outcomes):
        raise SystemExit(1)


@node_group.command("load")
@root_option
@json_option
def load_cmd(root: Path | None, as_json: bool) -> None:
    """Load every declared module for the running kernel (what dtk-node.service runs);
    exit 1 if one was not loaded, after trying all of them."""
    layout = Layout.from_env(root)
    layout.machine("dtk node load")
    with layout.locked():
        results = agent.load_all(layout, layout.running_kernel())
    if as_json:
        print_json([asdict(r) for r in results])
    else:
        for result in results:
            say(result.line())
    if not all(r.loaded for r in results):
        raise SystemExit(1)


@node_group.command("unload")
@click.argument("names", nargs=-1)
@root_option
@json_option
def unload_cmd(names: tuple[str, ...], root: Path | None, as_json: bool) -> None:
    """Unload declared modules (all without NAMES) as KMM's worker does."""
    layout = Layout.from_env(root)
    layout.machine("dtk node unload")
    done: list[str] = []
    idle: list[str] = []
    with layout.locked():
        for name in names or tuple(declare.names(layout)):
            (done if agent.unload_one(layout, declare.find(layout, name)) else idle).append(
                name)
    if as_json:
        print_json({"unloaded": done, "notLoaded": idle})
        return
    for name in done:
        say(f"unloaded {name}")
    for name in idle:
        say(f"{name} was not loaded: nothing to unload")


@node_group.command("clean")
@kernel_option("The kernel whose package was removed.", required=True)
@root_option
def clean_cmd(kernel: str, root: Path | None) -> None:
    """Forget what was prepared for a kernel (the kernel's postrm hook runs this)."""
    layout = Layout.from_env(root)
    with layout.locked():
        if not agent.forget_kernel(layout, kernel):
            stderr(f"dtk node: nothing was prepared for {kernel}")


@node_group.command("enroll")
@click.argument("cert", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--root-pw", is_flag=True,
              help="Confirm at MokManager with root's password instead of a new one.")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Read the MokManager password from this file (else it is "
                                 "asked for); it never reaches a command line.")
@json_option
def enroll_cmd(cert: Path, root_pw: bool, password_file: Path | None, as_json: bool) -> None:
    """Stage CERT (PEM or DER) for enrolment as a Machine Owner Key (mokutil --import): at
    the next boot, the person at the console confirms it in MokManager. dtk never stages
    it again by itself; `dtk node status` says whether it took."""
    layout = Layout.from_env(None)
    layout.machine("dtk node enroll")
    der = enroll.certificate(cert)
    password = None
    if password_file is not None:
        password = password_file.read_text().rstrip("\n")
    elif not root_pw:
        password = click.prompt("MokManager password (asked again at the next boot)",
                                hide_input=True, confirmation_prompt=True, err=True)
    if password is not None and not password:
        raise DtkError("the MokManager password is empty", hint="choose one, or --root-pw")
    with layout.locked():
        now = enroll.stage(layout, der, password)
    state_now, record = enroll.state(layout)
    if now is enroll.State.ENROLLED:
        state_now = now
    if as_json:
        print_json({"state": str(state_now), "certificate": hostkeys.describe(der)})
        return
    say(f"{hostkeys.describe(der)}: {enroll.next_step(state_now, record)}")


@node_group.command("keys")
@root_option
@json_option
def keys_cmd(root: Path | None, as_json: bool) -> None:
    """What this host's kernel trusts for module signatures: Secure Boot, lockdown and
    sig_enforce, the enrolled MOKs (MokListRT: the .machine keyring), db (the .platform
    keyring), and the last enrolment dtk staged."""
    layout = Layout.from_env(root)
    keys = hostkeys.read(layout)
    policy = host_policy(layout.root)
    state_now, record = enroll.state(layout, keys)
    moks = [hostkeys.describe(d) for d in keys.moks]
    db = [hostkeys.describe(d) for d in keys.db]
    data = {"efi": keys.efi, "secureBoot": keys.secure_boot, "lockdown": policy.secure_boot,
            "sigEnforce": policy.sig_enforce,
            "moks": moks, "db": db,
            "enrolment": {"state": str(state_now), "next": enroll.next_step(state_now, record)}}
    if as_json:
        print_json(data)
        return
    say(f"Secure Boot: {'on' if keys.secure_boot else 'off'}"
               f"{'' if keys.efi else ' (no EFI variables: not booted with UEFI)'}; "
               f"lockdown: {'yes' if policy.secure_boot else 'no'}; "
               f"sig_enforce: {'yes' if policy.sig_enforce else 'no'}")
    print_table(["KEYRING", "CERTIFICATE"],
                [(".machine (MOK)", d) for d in moks] + [(".platform (db)", d) for d in db])
    if state_now is not enroll.State.NONE:
        say(f"MOK enrolment {state_now}: {enroll.next_step(state_now, record)}")


@node_group.command("install-hooks")
@root_option
@json_option
def install_hooks_cmd(root: Path | None, as_json: bool) -> None:
    """Write the kernel postinst/postrm hooks and dtk-node.service, and enable it
    (`dtk node add` does this too)."""
    written = hooks.install(Layout.from_env(root))
    if as_json:
        print_json([str(p) for p in written])
    else:
        for path in written:
            say(f"wrote {path}")


def register(group: click.Group) -> None:
    group.add_command(node_group)
