"""What a kernel accepts, extracted once per kernel and cached.

A check needs, for kernel K: its exported symbols (Module.symvers), its
vermagic, its in-tree module names, and a few config switches. They come from
a root holding K's packages: the toolkit image (mounted read-only) or any
directory (an installed system, extracted packages). Extraction costs a
second or two; the JSON cache, keyed by the toolkit's image id (or by the
inputs' content for a directory), makes every later check milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtk import paths, rootfs
from dtk.digest import parts_digest
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel import keyring, modfile, sigcrypto, symvers
from dtk.kernel.modules_dep import builtin_names
from dtk.kernel.symvers import Symbol

_CONFIG_KEYS = (
    "CONFIG_SMP", "CONFIG_PREEMPT_BUILD", "CONFIG_PREEMPT_RT", "CONFIG_MODULE_UNLOAD",
    "CONFIG_MODVERSIONS", "CONFIG_MODULE_SIG", "CONFIG_MODULE_SIG_FORCE",
    "CONFIG_MODULE_FORCE_LOAD", "CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS",
    "CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT", "CONFIG_MODULE_SIG_HASH", "CONFIG_X86_64",
    "CONFIG_ARM64", "CONFIG_RANDSTRUCT", "CONFIG_MODULE_DECOMPRESS",
    *sigcrypto.CONFIG_KEYS,  # the digests a module signature may use, who enforces it
)
# The cached JSON's shape: bump the number when it changes; the config keys read are part
# of it, so facts cached without a key a check now reads are read again (a number alone
# collided: two lines of work each took 7 for different keys, sharing one cache).
_FORMAT = "6+" + parts_digest(*_CONFIG_KEYS, length=12)


@dataclass(frozen=True)
class KernelFacts:
    release: str
    arch: str
    vermagic: str
    config: dict[str, str]
    symbols: dict[str, Symbol]
    modules: frozenset[str]  # in-tree module names (dashes as underscores)
    source: str  # where the facts came from (image name/id or directory)
    module_struct_size: int | None = None  # sizeof(struct module); None without in-tree modules
    builtin_certs: tuple[bytes, ...] = ()  # DER; the kernel's built-in trusted keys
    # modules.builtin: modules compiled into vmlinux (dashes as underscores); modprobe
    # treats them as loaded, so a dependency on one is satisfied
    builtin: frozenset[str] = frozenset()
    # Where the facts came from, for scripts: the toolkit image and its full id (empty
    # for a directory or a headers package). Not cached: the cache key holds the id.
    image: str = ""
    image_id: str = ""
    # In-tree module files relative to /lib/modules/K ("kernel/drivers/…/x.ko"): where a
    # path an image's modules.dep records through a link to the node's tree must exist.
    # Empty when the facts come from headers alone (nothing to compare with).
    module_paths: frozenset[str] = frozenset()

    def enabled(self, option: str) -> bool:
        return self.config.get(option) == "y"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT, "release": self.release, "arch": self.arch,
            "vermagic": self.vermagic, "config": self.config, "source": self.source,
            "module_struct_size": self.module_struct_size,
            "builtin_certs": [c.hex() for c in self.builtin_certs],
            "modules": sorted(self.modules), "builtin": sorted(self.builtin),
            "module_paths": sorted(self.module_paths),
            # columns, not rows: decoding five flat lists is twice as fast as 25,000 small ones
            "symbols": {
                "name": list(self.symbols), "crc": [s.crc for s in self.symbols.values()],
                "module": [s.module for s in self.symbols.values()],
                "gpl_only": "".join("1" if s.gpl_only else "0" for s in self.symbols.values()),
                "namespace": [s.namespace for s in self.symbols.values()],
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KernelFacts:
        return cls(
            release=data["release"], arch=data["arch"], vermagic=data["vermagic"],
            config=dict(data["config"]), source=data["source"],
            modules=frozenset(data["modules"]), module_struct_size=data["module_struct_size"],
            builtin_certs=tuple(bytes.fromhex(c) for c in data["builtin_certs"]),
            builtin=frozenset(data["builtin"]),
            module_paths=frozenset(data.get("module_paths", ())),
            symbols=_symbols_from_columns(data["symbols"]))


def _symbols_from_columns(cols: dict[str, Any]) -> dict[str, Symbol]:
    gpl = [flag == "1" for flag in cols["gpl_only"]]
    return {name: Symbol(name, crc, module, g, ns) for name, crc, module, g, ns in
            zip(cols["name"], cols["crc"], cols["module"], gpl, cols["namespace"], strict=True)}


def parse_config(text: str) -> dict[str, str]:
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in _CONFIG_KEYS:
            config[key] = value.strip().strip('"')
    return config


def vermagic_from_config(release: str, config: dict[str, str]) -> str:
    """include/linux/vermagic.h, for x86-64 and arm64 (no arch-specific part there).

    PREEMPT_BUILD wins over PREEMPT_RT: mainline RT (6.12) sets both, so its
    modules say "preempt"; the 6.1 RT patch set has no PREEMPT_BUILD, hence
    "preempt_rt". Both spellings were read from real Debian modules.
    """
    parts = [release]
    if config.get("CONFIG_SMP") == "y":
        parts.append("SMP")
    if config.get("CONFIG_PREEMPT_BUILD") == "y":
        parts.append("preempt")
    elif config.get("CONFIG_PREEMPT_RT") == "y":
        parts.append("preempt_rt")
    if config.get("CONFIG_MODULE_UNLOAD") == "y":
        parts.append("mod_unload")
    if config.get("CONFIG_MODVERSIONS") == "y":
        parts.append("modversions")
    return " ".join(parts) + " "


def arch_from_config(config: dict[str, str]) -> str:
    if config.get("CONFIG_X86_64") == "y":
        return "x86_64"
    if config.get("CONFIG_ARM64") == "y":
        return "arm64"
    return "unknown"


_SYMVERS_CANDIDATES = (
    "/lib/modules/{k}/build/Module.symvers",
    "/usr/src/linux-headers-{k}/Module.symvers",
    "/usr/src/kernels/{k}/Module.symvers",
)
_CONFIG_CANDIDATES = (
    "/boot/config-{k}",
    "/lib/modules/{k}/build/.config",
    "/usr/src/linux-headers-{k}/.config",
    "/usr/src/kernels/{k}/.config",
)


def _find(root: Path, candidates: tuple[str, ...], release: str) -> Path | None:
    for pattern in candidates:
        found = rootfs.resolve(root, pattern.format(k=release))
        if found is not None and found.is_file():
            return found
    return None


def from_root(root: Path, release: str, source: str) -> KernelFacts:
    """Read K's facts from a root holding K's headers (and, ideally, its modules)."""
    symvers_path = _find(root, _SYMVERS_CANDIDATES, release)
    config_path = _find(root, _CONFIG_CANDIDATES, release)
    if symvers_path is None or config_path is None:
        missing = "Module.symvers" if symvers_path is None else "the kernel config"
        raise DtkError(f"{source} has no {missing} for kernel {release}",
                       hint=f"a toolkit for {release} has it: dtk toolkit build --kernel "
                            f"{release}")
    config = parse_config(config_path.read_text(errors="replace"))
    table = symvers.parse(symvers_path.read_text(errors="replace"), str(symvers_path))
    module_files = _in_tree_modules(root, release)
    vermagic = vermagic_from_config(release, config)
    arch = arch_from_config(config)
    struct_size = None
    if module_files:
        # The modules carry the exact vermagic and struct module the kernel was built with.
        sample = modfile.peek(module_files[0].read_bytes(), str(module_files[0]))
        vermagic = sample.first("vermagic") or vermagic
        arch = sample.machine
        struct_size = sample.this_module_size
    names = {modfile.module_name(p.name) for p in module_files}
    names |= {s.module_name for s in table.values() if s.module != "vmlinux"}
    return KernelFacts(release, arch, vermagic, config, table, frozenset(names), source,
                       struct_size, keyring.builtin_certificates(root, release),
                       builtin_modules(root, release),
                       module_paths=relative_paths(root, release))


def relative_paths(root: Path, release: str) -> frozenset[str]:
    """K's module files as paths relative to /lib/modules/K, as modules.dep writes them."""
    top = f"/lib/modules/{release}/"
    return frozenset(inner.removeprefix(top) for inner, _host in rootfs.walk_files(root, top)
                     if modfile.is_module(inner))


def builtin_modules(root: Path, release: str) -> frozenset[str]:
    """Names in /lib/modules/K/modules.builtin (one `kernel/…/name.ko` a line), which
    kmod's modprobe reports as built in instead of loading."""
    path = rootfs.resolve(root, f"/lib/modules/{release}/modules.builtin")
    if path is None or not path.is_file():
        return frozenset()
    return frozenset(builtin_names(path.read_text(errors="replace")))


def _in_tree_modules(root: Path, release: str) -> list[Path]:
    return [host for inner, host in rootfs.walk_files(root, f"/lib/modules/{release}")
            if modfile.is_module(inner)]


# For the other sources of facts (dtk.kernel.installed).
FORMAT = _FORMAT
SYMVERS_CANDIDATES = _SYMVERS_CANDIDATES
in_tree_modules = _in_tree_modules


def cache_path(key: str) -> Path:
    return paths.cache_dir() / "kmod" / "kernel-facts" / f"{key}.json"


def load_cached(key: str) -> KernelFacts | None:
    path = cache_path(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    return KernelFacts.from_json(data)


def store(key: str, facts: KernelFacts) -> None:
    write_atomic(cache_path(key), json.dumps(facts.to_json(), separators=(",", ":")).encode())


def directory_key(root: Path, release: str) -> str:
    """Cache key for a plain directory: the content of the files facts come from."""
    found = [_find(root, candidates, release)
             for candidates in (_SYMVERS_CANDIDATES, _CONFIG_CANDIDATES)]
    found += [rootfs.resolve(root, f"/lib/modules/{release}/{index}")
              for index in ("modules.dep", "modules.builtin")]
    contents = [f.read_bytes() if f is not None and f.is_file() else b"-" for f in found]
    return "dir-" + parts_digest(str(_FORMAT), release, *contents, length=32)


def for_directory(root: Path, release: str, source: str | None = None) -> KernelFacts:
    key = directory_key(root, release)
    cached = load_cached(key)
    if cached is not None:
        return cached
    facts = from_root(root, release, source or str(root))
    store(key, facts)
    return facts
