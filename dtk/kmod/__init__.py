"""Kernel-module knowledge: read .ko files (`elf`, `signature`, `der`), predict
whether a kernel loads them (`check`, `targets`), sign and verify them (`sign`,
`keygen`), and read or sign the modules of an image (`image`).

May import: dtk.toolkit (where a kernel's facts come from), dtk.engine,
dtk.distro, dtk.kernel and dtk's base; never another feature (driver, vm).
"""
