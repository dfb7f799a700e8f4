"""One vocabulary for the question dtk answers: does kernel K load this module?

`dtk check` predicts it, `dtk vmtest` (and proofs at fleet scale) observe it
on the real kernel; both say it with these words, so that a prediction and an
observation can be compared cell by cell.
"""

from __future__ import annotations

import enum


class Verdict(enum.StrEnum):
    LOADED = "loaded"  # loaded, live, checked, unloaded
    REFUSED = "refused"  # the kernel's loader (or modprobe) would not load it
    # The loader accepted it and ran its init, which returned an error: the module
    # fits the kernel, but (typically) the hardware it drives is absent (-ENODEV).
    INIT_FAILED = "init-failed"
    CHECK_FAILED = "check-failed"  # loaded, but the user's check command failed
    UNLOAD_FAILED = "unload-failed"
    CRASHED = "crashed"  # oops, panic, or the kernel never reached the worker
    TIMED_OUT = "timed-out"
    NOT_RUN = "not-run"  # nothing to boot: the image or the kernel is unusable

    @property
    def ok(self) -> bool:
        return self is Verdict.LOADED

    @property
    def compatible(self) -> bool:
        """The kernel accepted the module: it loaded, or only its init failed."""
        return self in (Verdict.LOADED, Verdict.INIT_FAILED)
