"""The proof in a terminal: modules by kernels, one cell each (build / check /
boot), then the reason for every cell that is not green. Pure."""

from __future__ import annotations

from dtk import textfit
from dtk.kernel.verdict import Verdict
from dtk.prove.model import CellResult, ProveResult
from dtk.vm import secureboot

_GREEN, _YELLOW, _RED, _MAGENTA, _DIM, _RESET = (
    "\033[32m", "\033[33m", "\033[31m", "\033[35m", "\033[2m", "\033[0m")


def cell_text(result: CellResult | None) -> str:
    if result is None:
        return "-"
    build = result.cell.build.value + ("*" if result.cached else "")
    if not result.cell.build.ok:
        return f"{build}"
    if result.problem:
        return f"{build} / not-run"
    text = f"{build} / {result.check.value} / {result.boot.value}"
    return text + (" ≠" if result.disagreements else "")


def _colour(result: CellResult | None) -> str:
    if result is None:
        return _DIM
    if result.disagreements:
        return _MAGENTA
    if result.green:
        return _YELLOW if result.boot is Verdict.INIT_FAILED else _GREEN
    return _RED


def render_text(result: ProveResult, *, colour: bool = False, width: int | None = None) -> str:
    """The matrix as text; `colour` adds ANSI colours (the caller decides: a TTY
    without NO_COLOR). Kernels that do not fit beside each other in `width` columns
    (the terminal's) go on in another block below, MODULE repeated: no cell is cut."""
    width = width or textfit.width()
    cells = {(c.cell.row, c.cell.kernel): c for c in result.cells}
    texts = {key: cell_text(c) for key, c in cells.items()}
    first = max([len("MODULE"), *(len(r) for r in result.rows)])
    widths = {k: max([len(k), *(len(texts.get((r, k), "-")) for r in result.rows)])
              for k in result.kernels}
    lines: list[str] = []
    for block in _blocks(first, [widths[k] for k in result.kernels], width):
        kernels = [result.kernels[i] for i in block]
        lines += [""] if lines else []
        lines.append("  ".join(["MODULE".ljust(first),
                                *(k.ljust(widths[k]) for k in kernels)]).rstrip())
        for row in result.rows:
            parts = [row.ljust(first)]
            for kernel in kernels:
                found = cells.get((row, kernel))
                text = texts.get((row, kernel), "-").ljust(widths[kernel])
                parts.append(f"{_colour(found)}{text}{_RESET}" if colour else text)
            lines.append("  ".join(parts).rstrip())
    chains = [f"{kernel}: {secureboot.summary(chain)}"
              for kernel, chain in result.secure_boot.items()]
    lines += [fitted for line in [*_reasons(result), *chains, summary(result)]
              for fitted in textfit.wrap(line, width)]
    return "\n".join(lines) + "\n"


def _blocks(first: int, widths: list[int], limit: int) -> list[list[int]]:
    """The kernel columns (their indexes) side by side, as many as fit beside MODULE's."""
    blocks: list[list[int]] = [[]]
    used = first
    for index, column in enumerate(widths):
        if blocks[-1] and used + 2 + column > limit:
            blocks.append([])
            used = first
        blocks[-1].append(index)
        used += 2 + column
    return blocks


def _reasons(result: ProveResult) -> list[str]:
    out = []
    for c in result.cells:
        reasons = c.reasons()
        if reasons:
            out.append(f"\n{c.cell.row} on {c.cell.kernel}:")
            out += [f"  {line}" for line in reasons]
            logs = {m.log for m in c.modules if m.log} | ({c.cell.log} if c.cell.log and
                                                           not c.cell.build.ok else set())
            out += [f"  log: {log}" for log in sorted(logs)]
    return out


def summary(result: ProveResult) -> str:
    green = sum(c.green for c in result.cells)
    boots = sum(result.boots.values())
    crashes = boots - len(result.boots)
    cached = sum(c.cached for c in result.cells)
    parts = [f"{len(result.cells)} cell(s): {green} green",
             f"{len(result.cells) - green} not",
             f"{len(result.disagreements)} disagreement(s) between check and boot"]
    boot_note = (f"{boots} boot(s) ({len(result.boots)} kernel(s)"
                 + (f" + {crashes} after a crash" if crashes else "") + ")")
    return ("\n" + ", ".join(parts) + f"; {boot_note}, {cached} cell(s) from the cache; "
            f"{result.seconds:.1f}s (* = proof cached)")
