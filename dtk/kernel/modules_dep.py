"""A kernel's module index as depmod writes it: modules.dep and modules.builtin.

Pure: text in, names and paths out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dtk.kernel.modfile import module_name


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
