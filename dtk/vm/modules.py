"""Module facts the VM needs: a .ko's `depends`, and closures over modules.dep.

Pure: bytes and text in, names and paths out.
"""

from __future__ import annotations

import gzip
import io
import lzma
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from dtk.errors import DtkError

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str) -> str:
    """The kernel's name for a module file: basename, suffix dropped, '-' → '_'."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def is_module(path: str) -> bool:
    return path.endswith(MODULE_SUFFIXES)


def uncompressed(path: str, data: bytes) -> bytes:
    """A module's ELF bytes, whatever compression kmod would accept."""
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    return data


def modinfo(path: str, data: bytes) -> dict[str, list[str]]:
    """The `.modinfo` key=value pairs of a module (a key may repeat)."""
    try:
        elf = ELFFile(io.BytesIO(uncompressed(path, data)))
        section = elf.get_section_by_name(".modinfo")
        raw = section.data() if section is not None else b""
    except (ELFError, lzma.LZMAError, zstandard.ZstdError, OSError, ValueError) as exc:
        raise DtkError(f"{path} is not a readable kernel module: {exc}") from exc
    info: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def depends(info: dict[str, list[str]]) -> list[str]:
    """Names from `depends=` (comma-separated, may be empty)."""
    names: list[str] = []
    for value in info.get("depends", []):
        names += [n.replace("-", "_") for n in value.split(",") if n]
    return names


@dataclass(frozen=True)
class ModulesDep:
    """A parsed modules.dep: module name → (its path, paths it depends on).

    Paths are relative to /lib/modules/<release>, as depmod writes them."""

    paths: dict[str, str]
    deps: dict[str, tuple[str, ...]]

    def closure(self, names: Iterable[str]) -> list[str]:
        """Relative paths of `names` and everything they need, dependencies
        first; names K does not ship as modules (built in, or unknown) are
        left out — see `missing`."""
        ordered: list[str] = []
        for name in names:
            path = self.paths.get(name)
            if path is None:
                continue
            for dep in (*reversed(self.deps[name]), path):
                if dep not in ordered:
                    ordered.append(dep)
        return ordered

    def missing(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n not in self.paths]


def parse_modules_dep(text: str) -> ModulesDep:
    paths: dict[str, str] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        target, sep, rest = line.partition(":")
        if not sep:
            continue
        name = module_name(target)
        paths[name] = target
        deps[name] = tuple(rest.split())
    return ModulesDep(paths, deps)


def builtin_names(text: str) -> set[str]:
    """Names from modules.builtin (paths of modules compiled into the kernel)."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}
