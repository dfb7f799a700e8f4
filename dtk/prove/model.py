"""What a proof is made of, as data: cells to prove, and what became of them. Pure.

A cell is one module source (a row) for one kernel: its build, then for each
kernel module its image holds, the static prediction (`dtk check`) and the
verdict of a real boot. Prediction and boot are compared in one vocabulary
(dtk.kernel.verdict): a static *loaded* agrees with a boot that the loader
accepted (loaded, init-failed, check-failed, unload-failed), *refused* with
refused. A crash or a hang says nothing about the prediction either way.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dtk import kernel as kern
from dtk.digest import parts_digest
from dtk.kernel.verdict import Verdict

# The boot verdicts in which the kernel's loader took the module.
_ACCEPTED = frozenset({Verdict.LOADED, Verdict.INIT_FAILED, Verdict.CHECK_FAILED,
                       Verdict.UNLOAD_FAILED})
# Worst first: a cell shows the worst of its modules.
SEVERITY = (Verdict.CRASHED, Verdict.TIMED_OUT, Verdict.REFUSED, Verdict.CHECK_FAILED,
            Verdict.UNLOAD_FAILED, Verdict.NOT_RUN, Verdict.INIT_FAILED, Verdict.LOADED)


class Build(enum.StrEnum):
    BUILT = "built"
    CACHED = "cached"  # the image already carried the cell's input hash
    GIVEN = "given"  # an image the user built (dtk prove --image)
    FAILED = "failed"
    EXCLUDED = "excluded"  # the module's dkms.conf excludes this kernel

    @property
    def ok(self) -> bool:
        return self in (Build.BUILT, Build.CACHED, Build.GIVEN)


@dataclass(frozen=True)
class ProveCell:
    """One (row, kernel) to prove. `modules` restricts which of the image's
    kernel modules are loaded (empty: every one it holds for the kernel)."""

    row: str
    kernel: str
    image: str
    build: Build
    image_id: str = ""
    reason: str = ""  # why the build failed or was excluded
    tail: tuple[str, ...] = ()
    log: str = ""
    built_for: str = ""  # the image's modules are for this kernel: load them on `kernel`
    modules: tuple[str, ...] = ()
    check: str = ""  # shell command run in the guest while each module is loaded

    @property
    def key(self) -> str:
        return f"{self.row}@{self.kernel}"

    def cache_key(self, guest_script: str, boot: str = "") -> str:
        """Content identity of this cell's proof: the image, the kernel, dtk's guest
        and what is loaded how (`boot`: the Secure Boot set-up's identity, '' for a
        plain boot). The same key means the same answer."""
        spec = json.dumps({"modules": self.modules, "check": self.check,
                           "built_for": self.built_for, **({"boot": boot} if boot else {})},
                          sort_keys=True)
        return parts_digest(PROOF_FORMAT, self.image_id, self.kernel, guest_script, spec)


# Bump when dtk's way of reaching a verdict changes (not only the guest script):
# /2 stopped calling every module of a boot that never started "crashed".
PROOF_FORMAT = "dtk-prove/2"


@dataclass
class ModuleProof:
    module: str
    predicted: Verdict = Verdict.NOT_RUN
    check_reason: str = ""
    booted: Verdict = Verdict.NOT_RUN
    boot_reason: str = ""
    boot: int = 0  # which boot of the kernel loaded it (0: none this run)
    load_output: str = ""
    kernel_log: str = ""
    log: str = ""

    @property
    def agrees(self) -> bool | None:
        """Whether prediction and boot agree; None when they cannot be compared."""
        if Verdict.NOT_RUN in (self.predicted, self.booted) or \
                self.booted in (Verdict.CRASHED, Verdict.TIMED_OUT):
            return None
        return (self.predicted is Verdict.LOADED) == (self.booted in _ACCEPTED)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["predicted"], data["booted"] = self.predicted.value, self.booted.value
        data["agrees"] = self.agrees
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleProof:
        data = {k: v for k, v in data.items() if k != "agrees"}
        data["predicted"], data["booted"] = Verdict(data["predicted"]), Verdict(data["booted"])
        return cls(**data)


@dataclass
class CellResult:
    cell: ProveCell
    modules: list[ModuleProof] = field(default_factory=list)
    problem: str = ""  # why nothing could be checked or booted
    cached: bool = False  # the proof came from the cache

    @property
    def check(self) -> Verdict:
        return worst(m.predicted for m in self.modules)

    @property
    def boot(self) -> Verdict:
        return worst(m.booted for m in self.modules)

    @property
    def disagreements(self) -> list[ModuleProof]:
        return [m for m in self.modules if m.agrees is False]

    @property
    def green(self) -> bool:
        """Built, predicted to load, and loaded (init-failed counts: compatible)."""
        return self.cell.build.ok and not self.problem and bool(self.modules) and all(
            m.predicted is Verdict.LOADED and m.booted.compatible for m in self.modules)

    def reasons(self) -> list[str]:
        """Why this cell is not green, one line each (empty when it is)."""
        if not self.cell.build.ok:
            return [f"build {self.cell.build.value}: {self.cell.reason}"]
        if self.problem:
            return [self.problem]
        out = []
        for m in self.modules:
            if m.agrees is False:
                out.append(f"{m.module}: DISAGREE — check says {m.predicted.value}"
                           f"{' (' + m.check_reason + ')' if m.check_reason else ''}, "
                           f"boot says {m.booted.value} ({m.boot_reason})")
            elif m.predicted is not Verdict.LOADED and m.predicted is not m.booted:
                out.append(f"{m.module}: check {m.predicted.value}: {m.check_reason}")
            if not m.booted.ok:
                out.append(f"{m.module}: {m.booted.value}: {m.boot_reason}")
        return out

    def to_json(self) -> dict[str, Any]:
        line, flavour = kernel_line_flavour(self.cell.kernel)
        return {"row": self.cell.row, "kernel": self.cell.kernel,
                "line": line, "flavour": flavour,
                "image": self.cell.image, "image_id": self.cell.image_id,
                "build": self.cell.build.value, "build_reason": self.cell.reason,
                "build_tail": list(self.cell.tail), "build_log": self.cell.log,
                "built_for": self.cell.built_for, "check": self.check.value,
                "boot": self.boot.value, "green": self.green, "cached": self.cached,
                "problem": self.problem, "reasons": self.reasons(),
                "disagreements": len(self.disagreements),
                "modules": [m.to_json() for m in self.modules]}


def kernel_line_flavour(release: str) -> tuple[str, str]:
    parsed = kern.try_parse(release)
    return (parsed.line, parsed.flavour.value) if parsed else ("?", "?")


def worst(verdicts: Any) -> Verdict:
    found = set(verdicts)
    return next((v for v in SEVERITY if v in found), Verdict.NOT_RUN)


@dataclass
class ProveResult:
    rows: list[str]
    kernels: list[str]
    cells: list[CellResult]
    boots: dict[str, int] = field(default_factory=dict)  # kernel → boots this run
    seconds: float = 0.0
    # kernel → the Secure Boot chain as its guest saw it (dtk.vm.secureboot.describe)
    secure_boot: dict[str, dict[str, str]] = field(default_factory=dict)

    def cell(self, row: str, kernel: str) -> CellResult | None:
        return next((c for c in self.cells if c.cell.row == row and c.cell.kernel == kernel),
                    None)

    @property
    def disagreements(self) -> list[tuple[CellResult, ModuleProof]]:
        return [(c, m) for c in self.cells for m in c.disagreements]

    @property
    def ok(self) -> bool:
        return not self.disagreements and all(c.green for c in self.cells)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "kernels": self.kernels,
                "boots": self.boots, "total_boots": sum(self.boots.values()),
                "seconds": round(self.seconds, 1), "ok": self.ok,
                "disagreements": len(self.disagreements),
                **({"secure_boot": self.secure_boot} if self.secure_boot else {}),
                "cells": [c.to_json() for c in self.cells]}
