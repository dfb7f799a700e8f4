"""Boot a real kernel under qemu and load a driver container's modules the way
KMM's worker does.

Pure parts (`bzimage`, `cpio`, `modules`, `guest`, `verdict`, and the command
lines in `qemu`) are kept apart from execution (`tools`, `kernels`, `driver`,
`qemu.boot`, `vmtest`), so the plans are unit-tested without qemu and the
executors are tested against the real tools.
"""
