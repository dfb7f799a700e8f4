"""A parallel vmtest run: one kernel's unexpected exception is that kernel's
verdict, and every other kernel still ends with its own (issue 9 §7.2)."""

from __future__ import annotations

import threading
from pathlib import Path

from dtk.kernel.verdict import Verdict
from dtk.progress import NullMonitor
from dtk.vm.driver import ImageContents
from dtk.vm.guest import GuestConfig
from dtk.vm.vmtest import VmResult, VmTestSpec, _Run, _run_parallel

KERNELS = ("6.1.0-57-amd64", "6.1.0-57-rt-amd64", "6.12.117+deb12-amd64")


def run_of(tmp_path: Path) -> _Run:
    spec = VmTestSpec("localhost/x:${KERNEL_FULL_VERSION}", KERNELS, GuestConfig(module="x"))
    return _Run(spec, tmp_path / "userland", tmp_path / "probe", tmp_path, lambda: None)  # type: ignore[arg-type,return-value]


def test_a_bug_on_one_kernel_leaves_the_others_their_verdicts(tmp_path: Path) -> None:
    finished: list[str] = []
    lock = threading.Lock()

    def job(run: _Run, release: str, contents: ImageContents | str | None) -> VmResult:
        if release == KERNELS[1]:
            raise KeyError("trees")  # what a bug looks like: not a DtkError
        with lock:
            finished.append(release)
        return VmResult(release, "img", Verdict.LOADED, "")

    results = _run_parallel(run_of(tmp_path), dict.fromkeys(KERNELS), NullMonitor(), job)
    assert [r.kernel for r in results] == list(KERNELS)
    assert [r.verdict for r in results] == [Verdict.LOADED, Verdict.NOT_RUN, Verdict.LOADED]
    assert results[1].reason.startswith("dtk bug: KeyError: 'trees' at test_vm_parallel.py:")
    assert sorted(finished) == sorted([KERNELS[0], KERNELS[2]])
