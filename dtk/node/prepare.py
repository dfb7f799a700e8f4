"""`dtk node prepare --kernel K`: every declared module made ready for K before
the reboot, or the reason it will not be.

For each declaration: resolve K's image (kernelMappings), fetch it (skopeo,
the Module's credentials and registryTLS), unpack it into its own tree,
check its modules against K as this host has it. The outcome, one per
declaration, is kept in /var/lib/dtk/kernels/K/NAME.json: what `status`
answers from and what the boot unit loads from. A failure is an outcome,
never an exception: a kernel package's installation must not fail because a
driver image is missing (that is how DKMS hooks leave hosts unbootable).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kmmapi.authfile import authfile
from dtk.node import declare, hostkeys, oci, pins
from dtk.node.declare import Declaration
from dtk.node.layout import Layout
from dtk.node.verify import ModuleVerdict, dependencies, verify

POLICY = "/etc/containers/policy.json"  # the host's, as skopeo reads it as root


@dataclass(frozen=True)
class Outcome:
    name: str
    kernel: str
    ready: bool
    reason: str
    image: str = ""
    digest: str = ""
    pinned: str = ""
    tree: str = ""  # the unpacked image, relative to the state directory
    targets: tuple[str, ...] = ()  # what modprobe loads: moduleName (+ loading order)
    modules: tuple[ModuleVerdict, ...] = ()
    prepared_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(
        timespec="seconds"))
    declaration: str = ""  # the digest of the declaration it was prepared for
    pinned_at: str = ""
    repinned_from: str = ""  # the digest the tag named before `prepare --refresh`

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"], data["modules"] = list(self.targets), [asdict(m) for m in self.modules]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(**{**data, "targets": tuple(data.get("targets", ())),
                      "modules": tuple(ModuleVerdict(**m) for m in data.get("modules", ()))})

    @classmethod
    def failed(cls, decl_name: str, kernel: str, reason: str, image: str = "",
               declaration: str = "") -> Outcome:
        return cls(decl_name, kernel, False, reason, image, declaration=declaration)

    def line(self) -> str:
        """The one line apt's output shows for this module."""
        word = "ready" if self.ready else "NOT READY"
        moved = f" (the tag moved: was {self.repinned_from[:19]}, now {self.pinned[:19]})" \
            if self.repinned_from else ""
        return f"dtk node: {self.name} for {self.kernel}: {word}: {self.reason}{moved}"


def prefixes(decl: Declaration) -> tuple[str, ...]:
    """What of the image a host needs: what KMM's worker copies out of it."""
    probe = decl.modprobe
    parts = [f"{probe.dir_name.strip('/')}/lib/modules"]
    if probe.firmware_path:
        parts.append(probe.firmware_path.strip("/"))
    return tuple(parts)


def targets(decl: Declaration) -> tuple[str, ...]:
    probe = decl.modprobe
    names = probe.modules_loading_order or (decl.module_name,)
    return tuple(n.replace("-", "_") for n in names if n)


def _judge(decl: Declaration, kernel: str, verdicts: list[ModuleVerdict],
           closure: dict[str, list[str]]) -> tuple[bool, str]:
    """Ready when every target loads on K and so does every module of the image that
    modprobe loads with it (its modules.dep closure)."""
    found = {v.module: v for v in verdicts}
    for name in targets(decl):
        verdict = found.get(name)
        if verdict is None:
            return False, f"the image has no module {name} for {kernel}"
        if not verdict.loads:
            return False, f"refused: {name}: {verdict.reason}"
        for member in closure.get(name, ()):
            needed = found.get(member)
            if needed is not None and not needed.loads:
                return False, f"refused: {name} needs {member}: {needed.reason}"
    first = found[targets(decl)[0]] if targets(decl) else None
    return True, first.reason if first else "loads"


def host_modules(decl: Declaration) -> oci.HostModules:
    """Where the image's `host` link is (see oci.HostModules)."""
    return oci.HostModules(f"{decl.modprobe.dir_name.strip('/')}/lib/modules")


def prepare_one(layout: Layout, decl: Declaration, kernel: str, *,
                refresh: bool = False) -> Outcome:
    image = ""
    try:
        plan = decl.resolve(kernel)
        image = plan.image
        known = pins.get(layout, decl.name, image)
        with authfile(decl.secret()) as auth:
            fetched = oci.fetch(image, layout.oci,
                                pinned="" if refresh or known is None else known.digest,
                                tls_verify=plan.registry_tls.tls_verify, authfile=auth,
                                signed_by_policy=layout.host(POLICY)
                                if decl.require_signature else None)
        pin = pins.put(layout, decl.name, image, fetched.pinned) if fetched.pinned else None
        tree = oci.unpack(layout.oci, fetched.digest, layout.trees, prefixes(decl),
                          host_modules(decl))
        verdicts = verify(tree, decl.modprobe.dir_name, kernel, layout.root,
                          (*hostkeys.read(layout).trusted, *decl.certificates))
        closure = dependencies(tree, decl.modprobe.dir_name, kernel, layout.root,
                               targets(decl))
    except DtkError as exc:
        return Outcome.failed(decl.name, kernel, _one_line(exc.message), image, decl.digest)
    ready, reason = _judge(decl, kernel, verdicts, closure)
    moved = known.digest if known is not None and pin is not None \
        and known.digest != pin.digest else ""
    return Outcome(decl.name, kernel, ready, reason, image, fetched.digest, fetched.pinned,
                   str(tree.relative_to(layout.state)), targets(decl), tuple(verdicts),
                   declaration=decl.digest, pinned_at=pin.pinned_at if pin else "",
                   repinned_from=moved)


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def state_file(layout: Layout, kernel: str, name: str) -> Path:
    return layout.kernel_state(kernel) / f"{name}.json"


def record(layout: Layout, outcome: Outcome) -> None:
    write_atomic(state_file(layout, outcome.kernel, outcome.name),
                 json.dumps(outcome.to_json(), indent=2).encode())


def prepare(layout: Layout, kernel: str,
            on_outcome: Callable[[Outcome], None] | None = None, *,
            refresh: bool = False) -> list[Outcome]:
    """Every declaration for `kernel`, each outcome recorded as soon as it is known."""
    outcomes = []
    for name in declare.names(layout):
        try:
            decl = declare.find(layout, name)
        except DtkError as exc:  # a declaration edited by hand into an invalid one
            outcome = Outcome.failed(name, kernel, _one_line(exc.message))
        else:
            outcome = prepare_one(layout, decl, kernel, refresh=refresh)
        record(layout, outcome)
        if on_outcome is not None:
            on_outcome(outcome)
        outcomes.append(outcome)
    return outcomes


def recorded(layout: Layout, kernel: str, name: str) -> Outcome | None:
    try:
        data = json.loads(state_file(layout, kernel, name).read_text())
        return Outcome.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


def status(layout: Layout, kernel: str) -> list[Outcome]:
    """The recorded outcome of each declaration for `kernel`: not ready when it was never
    prepared, prepared for an earlier form of the declaration, or does not read."""
    out = []
    for name in declare.names(layout):
        try:
            decl = declare.find(layout, name)
        except DtkError as exc:
            path = layout.declaration(name)
            shown = _one_line(exc.message).replace(str(path), path.name)
            out.append(Outcome.failed(name, kernel, f"the declaration does not read: {shown}"))
            continue
        found = recorded(layout, kernel, name)
        again = f"(dtk node prepare --kernel {kernel})"
        if found is None:
            out.append(Outcome(name, kernel, False, f"not prepared for {kernel} {again}",
                               prepared_at=""))
        elif found.declaration != decl.digest:
            out.append(Outcome(name, kernel, False, f"prepared for an earlier declaration of "
                               f"{name}, not this one {again}", prepared_at=""))
        else:
            out.append(found)
    return out
