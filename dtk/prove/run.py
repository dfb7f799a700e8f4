"""Prove a matrix: check every built cell statically, then boot each kernel once
(again only after a crash) loading every cell's modules, and compare.

Proofs are cached per (image id, kernel, dtk's guest, what is loaded how):
proving an unchanged matrix again boots nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography import x509

from dtk import paths
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel import facts, keyring
from dtk.kernel.verdict import Verdict
from dtk.kmod import check as chk
from dtk.kmod import image
from dtk.kmod.targets import check_target
from dtk.progress import Monitor, NullMonitor
from dtk.prove.model import CellResult, ModuleProof, ProveCell, ProveResult
from dtk.toolkit import locate
from dtk.vm import guest
from dtk.vm.batch import BatchModule, BatchSpec, KernelRun, run_batches
from dtk.vm.secureboot import SecureBootSpec

# Verdicts not worth keeping: nothing was learnt, or the machine may have been slow.
_UNCACHED = (Verdict.NOT_RUN, Verdict.TIMED_OUT)


def cache_path(key: str) -> Path:
    return paths.cache_dir() / "prove" / f"{key}.json"


def prove(cells: Sequence[ProveCell], monitor: Monitor | None = None, *,
          timeout_s: float = 60.0, accel: str = "auto", use_cache: bool = True,
          secure_boot: SecureBootSpec | None = None) -> ProveResult:
    """`secure_boot`: boot through the Secure Boot chain with its certificate enrolled,
    and predict for that machine (check --secure-boot --cert)."""
    monitor = monitor or NullMonitor()
    start = time.monotonic()
    results = [CellResult(c) for c in cells]
    script = guest.init_script()
    boot = secure_boot.identity if secure_boot is not None else ""
    unknown = []
    for result in results:
        if not result.cell.build.ok:
            continue
        cached = _load(result.cell.cache_key(script, boot)) if use_cache else None
        if cached is not None:
            result.modules, result.cached = cached, True
            continue
        unknown.append(result)
    if unknown:
        monitor.step(f"checking {len(unknown)} cell(s)")
    kernel_facts = {k: _facts(k) for k in dict.fromkeys(r.cell.kernel for r in unknown)}
    policy, cert = _machine(secure_boot)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # mostly buildah
        list(pool.map(lambda r: _predict(r, kernel_facts[r.cell.kernel], policy, cert),
                      unknown))
    todo = [r for r in unknown if r.modules]
    boots: dict[str, int] = {}
    chains: dict[str, dict[str, str]] = {}
    batches = plan_batches(todo)
    if batches:
        spec = BatchSpec({k: tuple(m for _r, m in v) for k, v in batches.items()},
                         timeout_s=timeout_s, accel=accel, secure_boot=secure_boot)
        for run in run_batches(spec, monitor):
            boots[run.kernel] = run.boots
            if run.boot:
                chains[run.kernel] = run.boot
            _apply(run, batches[run.kernel])
    for result in todo:
        _store(result, script, boot)
    rows = list(dict.fromkeys(c.row for c in cells))
    kernels = list(dict.fromkeys(c.kernel for c in cells))
    return ProveResult(rows, kernels, results, boots, time.monotonic() - start,
                       secure_boot=chains)


def _machine(secure_boot: SecureBootSpec | None
             ) -> tuple[chk.Policy, x509.Certificate | None]:
    """The machine `check` predicts for: a plain boot, or Secure Boot with the enrolled
    certificate (the first, as `check --cert` takes one)."""
    if secure_boot is None:
        return chk.Policy(), None
    certs = keyring.load(secure_boot.certs[:1])
    return chk.Policy(secure_boot=True), (certs[0] if certs else None)


def unit_name(index: int, module: str) -> str:
    """One word, unique in a kernel's batch: the guest's directory for it."""
    return f"c{index}-" + re.sub(r"[^A-Za-z0-9_.+-]", "_", module)


def plan_batches(todo: Sequence[CellResult]
                 ) -> dict[str, list[tuple[tuple[CellResult, ModuleProof], BatchModule]]]:
    """Per kernel, in the matrix's order: each module to boot, with where its
    answer goes. Pure. Modules the check refused are booted too: that is the
    comparison."""
    out: dict[str, list[tuple[tuple[CellResult, ModuleProof], BatchModule]]] = {}
    for index, result in enumerate(todo):
        cell = result.cell
        for proof in result.modules:
            item = BatchModule(unit_name(index, proof.module), cell.image, proof.module,
                               built_for=cell.built_for, check=cell.check)
            out.setdefault(cell.kernel, []).append(((result, proof), item))
    return out


def _apply(run: KernelRun,
           where: list[tuple[tuple[CellResult, ModuleProof], BatchModule]]) -> None:
    by_name = {r.name: r for r in run.modules}
    for (_result, proof), item in where:
        booted = by_name.get(item.name)
        if booted is None:
            continue
        proof.booted, proof.boot_reason, proof.boot = booted.verdict, booted.reason, booted.boot
        proof.load_output = booted.sections.get("load", "")
        proof.kernel_log = booted.sections.get("dmesg", "")
        proof.log = booted.log


def _facts(kernel: str) -> facts.KernelFacts | str:
    try:
        return locate.kernel_facts(kernel)
    except DtkError as exc:
        return exc.message


def _predict(result: CellResult, known: facts.KernelFacts | str, policy: chk.Policy,
             cert: x509.Certificate | None) -> None:
    """The static prediction for each module the cell loads (`dtk check`)."""
    cell = result.cell
    if isinstance(known, str):
        result.problem = f"cannot check against {cell.kernel}: {known}"
        return
    try:
        predictions = check_target(image.read_image_index(cell.image, cert=cert), known,
                                   policy)
    except DtkError as exc:
        result.problem = exc.message
        return
    wanted = {m.replace("-", "_") for m in cell.modules}
    for prediction in predictions:
        if wanted and prediction.module.replace("-", "_") not in wanted:
            continue
        refusals = prediction.refusals
        result.modules.append(ModuleProof(prediction.module, prediction.verdict,
                                          refusals[0].message if refusals else ""))
    if not result.modules:
        result.problem = (f"the image has none of {', '.join(sorted(wanted))} for "
                          f"{cell.built_for or cell.kernel}")


def _load(key: str) -> list[ModuleProof] | None:
    path = cache_path(key)
    try:
        data = json.loads(path.read_text())
        return [ModuleProof.from_json(m) for m in data["modules"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: prove again


def _store(result: CellResult, script: str, boot: str) -> None:
    if result.problem or any(m.booted in _UNCACHED for m in result.modules):
        return
    data = {"cell": result.cell.key, "image_id": result.cell.image_id,
            "modules": [m.to_json() for m in result.modules]}
    path = cache_path(result.cell.cache_key(script, boot))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1).encode())
