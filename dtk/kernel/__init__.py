"""Everything about one kernel that several features need; pure or read-only.

Owns: release strings and KMM's variables (`release`, re-exported here, so
`from dtk import kernel as kern; kern.parse(...)`), module files (`modfile`:
names, capped decompression, `.modinfo`), the module index (`modules_dep`),
Module.symvers (`symvers`), the kernel image (`bzimage`: payloads, vmlinux),
its built-in keys (`keyring`), the signature appended to a module (`modsig`, over
the small DER reader `der`), and the facts a check needs (`facts`: read
from a root someone else mounted or unpacked, cached by content).

May import: dtk's base modules (errors, paths, rootfs, files, digest). Nothing
here runs a tool or knows where a kernel's files come from (that is
`dtk.toolkit.locate`).
"""

from dtk.kernel.release import (
    Family,
    Flavour,
    KernelRelease,
    kmm_build_args,
    kmm_variables,
    normalize,
    parse,
    standard_sibling,
    substitute,
    try_parse,
)

__all__ = [
    "Family", "Flavour", "KernelRelease", "kmm_build_args", "kmm_variables", "normalize",
    "parse", "standard_sibling", "substitute", "try_parse",
]
