"""Many modules in one boot, but never an initramfs the guest cannot hold: seen on
Debian's whole DKMS corpus, where 26 images made a 552 MB initrd that qemu refused
('initrd is too large') and every module was reported as crashed."""

from __future__ import annotations

from dtk.vm.batch import BatchModule, BatchSpec, initrd_budget, size_chunks


def items(n: int) -> list[BatchModule]:
    return [BatchModule(f"c{i}", f"localhost/x{i}:1", f"m{i}") for i in range(n)]


def test_chunks_keep_order_and_stay_under_the_budget() -> None:
    mods = items(5)
    chunks = size_chunks(mods, [40, 50, 30, 90, 10], budget=100)
    assert [[m.name for m in c] for c in chunks] == [["c0", "c1"], ["c2"], ["c3", "c4"]]
    assert [m for c in chunks for m in c] == mods


def test_an_item_larger_than_the_budget_boots_alone() -> None:
    chunks = size_chunks(items(3), [10, 500, 10], budget=100)
    assert [[m.name for m in c] for c in chunks] == [["c0"], ["c1"], ["c2"]]


def test_the_budget_is_a_quarter_of_guest_memory() -> None:
    assert initrd_budget(512) == 128 << 20
    assert initrd_budget(BatchSpec({}).memory_mb) == 256 << 20  # the default guest: 1 GB
