"""Synthetic proofs for the report's tests: any size, every kind of cell."""

from __future__ import annotations

from dtk.kernel.verdict import Verdict
from dtk.prove.model import Build, CellResult, ModuleProof, ProveCell, ProveResult

_BOOTS = (Verdict.LOADED, Verdict.LOADED, Verdict.LOADED, Verdict.INIT_FAILED, Verdict.REFUSED,
          Verdict.CRASHED, Verdict.TIMED_OUT)


def kernels(count: int) -> list[str]:
    """Debian releases: 6.1 and 6.12 lines, standard, rt and cloud flavours."""
    out = []
    for i in range(count):
        flavour = ("", "rt-", "cloud-")[i % 3]
        out.append(f"6.1.0-{40 + i // 3}-{flavour}amd64" if i % 2 == 0
                   else f"6.12.{100 + i // 3}+deb12-{flavour}amd64")
    return out


def synthetic(rows: int, columns: int) -> ProveResult:
    names = [f"module-{i:02d}" for i in range(rows)]
    releases = kernels(columns)
    cells = []
    for r, row in enumerate(names):
        for k, release in enumerate(releases):
            n = (r * 7 + k * 3) % 23
            if n == 0:
                cells.append(CellResult(ProveCell(row, release, f"img/{row}:{release}",
                                                  Build.FAILED, reason="make: *** Error 2",
                                                  tail=("error: implicit declaration",))))
                continue
            boot = _BOOTS[n % len(_BOOTS)]
            predicted = Verdict.REFUSED if boot is Verdict.REFUSED else Verdict.LOADED
            if n == 14:  # a disagreement (the check said refused, it loaded)
                predicted = Verdict.REFUSED
            proof = ModuleProof(row.replace("-", "_"), predicted, "", boot, f"why {boot}",
                                boot=1, load_output="insmod …", kernel_log="[ 1.0] words")
            cells.append(CellResult(ProveCell(row, release, f"img/{row}:{release}",
                                              Build.BUILT, "sha256:x"), [proof]))
    return ProveResult(names, releases, cells, dict.fromkeys(releases, 1), 12.3)
