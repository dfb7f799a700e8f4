"""Boot a real kernel under qemu and load a driver container's modules the way
KMM's worker does.

Pure planning (`plan`, `guest`, `modules`, `bzimage`, `cpio`) is kept apart from
execution (`qemu`, `initramfs`, `tools`, `vmtest`), so the plans are unit-tested
without qemu and the executors are tested against the real tools.
"""
