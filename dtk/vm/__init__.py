"""Boot a real kernel under qemu and load a driver container's modules the way
KMM's worker does.

Pure parts (`cpio`, `guest`, `verdict`, and the command lines in `qemu`) are
kept apart from execution (`tools`, `kernels`, `driver`, `qemu.boot`,
`vmtest`), so the plans are unit-tested without qemu and the executors are
tested against the real tools. The guest's init is `dtk/data/guest-init.sh`.

Two ways to boot: qemu entering the kernel directly (`qemu`, the default), and the
real Secure Boot chain (`secureboot`: OVMF, shim, GRUB and the signed kernel, over
`firmware`, `esp`, `varstore`, `mokmanager` and `chain`), whose pieces the node's
Secure Boot work reuses.

May import: dtk.toolkit, dtk.distro, dtk.engine, dtk.kernel and dtk's base;
never another feature (driver, kmod).
"""
