"""The VM's kernel cache under concurrent runs: pruning a stale key never takes
an entry another process is booting from (issue 9 §7.3)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from dtk.vm import kernels
from dtk.vm.kernels import KernelSource

K = "6.1.0-57-amd64"
OLD = KernelSource(K, "toolkit before a rebuild", "image-old")
NEW = KernelSource(K, "toolkit after a rebuild", "image-new")


def cached_entry(cache: Path, source: KernelSource) -> Path:
    """An entry as ensure/using_kernel leaves it, without extracting anything."""
    base = cache / "vm" / "kernels" / source.key / K
    (base / "modules").mkdir(parents=True)
    (base / "vmlinux").write_bytes(b"\x7fELF")
    (base / kernels._COMPLETE).write_text(source.origin + "\n")
    return base


def boot_from(source: KernelSource, using: Event, done: Event) -> None:
    """Another dtk run: resolves the cached entry and keeps using it."""
    with kernels.using_kernel(source, lambda: None) as parts:  # type: ignore[arg-type,return-value]
        assert parts.boot_image.exists()
        using.set()
        done.wait(30)
        assert parts.boot_image.exists(), "pruned while in use"


def test_an_entry_in_use_is_not_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTK_CACHE_DIR", str(tmp_path))
    old = cached_entry(tmp_path, OLD)
    cached_entry(tmp_path, NEW)
    ctx = multiprocessing.get_context("fork")
    using, done = ctx.Event(), ctx.Event()
    reader = ctx.Process(target=boot_from, args=(OLD, using, done))
    reader.start()
    try:
        assert using.wait(30)
        kernels._prune_other_keys(NEW)  # what a run filling NEW does once it is complete
        assert (old / "vmlinux").exists()
    finally:
        done.set()
        reader.join(30)
    assert reader.exitcode == 0
    kernels._prune_other_keys(NEW)  # nobody uses it now: a stale 70 MB entry goes
    assert not old.exists()
