"""Module.symvers: every symbol a kernel (vmlinux and its in-tree modules) exports.

One line per symbol: `0xCRC <TAB> symbol <TAB> module <TAB> EXPORT_SYMBOL[_GPL] <TAB> namespace`
(the namespace column is present but empty for most symbols since 5.4).
"""

from __future__ import annotations

from typing import NamedTuple

from dtk.errors import DtkError
from dtk.kernel.modfile import module_name


class Symbol(NamedTuple):
    """One export. A NamedTuple, not a dataclass: a kernel has ~25,000 and the
    cached facts build them all on every check run (5x faster to construct)."""

    name: str
    crc: int
    module: str  # "vmlinux" or the module's path without .ko, e.g. drivers/usb/core/usbcore
    gpl_only: bool
    namespace: str

    @property
    def module_name(self) -> str:
        """The owner's name as the kernel spells it (dashes become underscores)."""
        return module_name(self.module)


def parse(text: str, source: str = "Module.symvers") -> dict[str, Symbol]:
    symbols: dict[str, Symbol] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 4:
            raise DtkError(f"{source}:{lineno}: expected at least 4 tab-separated columns",
                           hint="is this a Module.symvers from kernel 5.4 or newer?")
        crc_text, name, module, kind = cols[:4]
        try:
            crc = int(crc_text, 16)
        except ValueError:
            raise DtkError(f"{source}:{lineno}: '{crc_text}' is not a CRC") from None
        namespace = cols[4] if len(cols) > 4 else ""
        symbols[name] = Symbol(name, crc, module, kind.endswith("_GPL"), namespace)
    return symbols
