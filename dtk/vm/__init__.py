"""Boot a real kernel under qemu and load a driver container's modules the way
KMM's worker does.

Pure parts (`cpio`, `guest`, `verdict`, and the command lines in `qemu`) are
kept apart from execution (`tools`, `kernels`, `driver`, `qemu.boot`,
`vmtest`), so the plans are unit-tested without qemu and the executors are
tested against the real tools. The guest's init is `dtk/data/guest-init.sh`.

May import: dtk.toolkit, dtk.distro, dtk.engine, dtk.kernel and dtk's base;
never another feature (driver, kmod).
"""
