"""Which of K's in-tree modules a guest must hold so that the kernel's own
module requests succeed as they do on a node.

On a node, /lib/modules/K holds every module, so whatever the kernel asks for
at run time is found: `request_module("crypto-crc32c")` when libcrc32c's init
allocates its hash, `softdep libcrc32c pre: crc32c` when kmod loads it. The
guest cannot hold all of K (396 MB, 4,023 modules for 6.1), so it holds the
closure of the driver's needs over what modprobe and the kernel follow:

- modules.dep (hard dependencies),
- modules.softdep (`pre:`/`post:`, names resolved through modules.alias),
- crypto algorithm names the modules ask the crypto API for: string literals
  in their `.rodata` that K's modules.alias knows as `crypto-NAME` (templates
  like `hmac(sha256)` are split into their parts, as the crypto manager
  requests each of them).

kmod ignores a softdep that fails to load and the kernel logs nothing when an
init returns -ENOENT, so a missing module here shows up only as an unrelated-
looking refusal of the driver. Pure: text and bytes in, paths out.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from dtk.kernel import modsig
from dtk.kernel.modfile import ModuleError, module_name, parse_modinfo, uncompress
from dtk.kernel.modules_dep import ModulesDep
from dtk.kernel.sigcrypto import crypto_module_request

# An algorithm or template name as the crypto API takes it: "crc32c",
# "hmac(sha256)", "cbc(aes)", "sha256-generic".
_ALG_NAME = re.compile(rb"[A-Za-z0-9_\-(),]{2,64}")
_SOFTDEP_WORDS = ("pre:", "post:")


@dataclass(frozen=True)
class ModuleIndex:
    """K's module index as modprobe reads it (the parts reach needs)."""

    dep: ModulesDep
    softdeps: dict[str, tuple[str, ...]]  # module → names it soft-depends on
    aliases: dict[str, tuple[str, ...]]  # literal alias → modules (wildcards left out)

    def resolve(self, name: str) -> tuple[str, ...]:
        """Modules a modprobe of `name` would load: the module itself, or the
        modules that declare the alias (several, like crc32c_intel and _generic)."""
        module = module_name(name)
        if module in self.dep.paths:
            return (module,)
        return self.aliases.get(name, ())


def parse_softdeps(text: str) -> dict[str, tuple[str, ...]]:
    """modules.softdep (`softdep MOD pre: A B post: C`) → MOD → (A, B, C)."""
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "softdep":
            continue
        names = tuple(w for w in words[2:] if w not in _SOFTDEP_WORDS)
        key = module_name(words[1])
        out[key] = out.get(key, ()) + names
    return out


def parse_aliases(text: str) -> dict[str, tuple[str, ...]]:
    """modules.alias → literal alias → modules. Patterns with wildcards are
    device ids (pci:v…, usb:…): nothing without that device asks for them."""
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) != 3 or words[0] != "alias" or any(c in words[1] for c in "*?["):
            continue
        out[words[1]] = (*out.get(words[1], ()), module_name(words[2]))
    return out


def module_softdeps(modinfo: tuple[tuple[str, str], ...]) -> list[str]:
    """Names from a module's own `softdep=` fields (what depmod copies into
    modules.softdep; an out-of-tree module's are read from the module itself)."""
    return [w for key, value in modinfo if key == "softdep"
            for w in value.split() if w not in _SOFTDEP_WORDS]


def requested_algorithms(raw: bytes, path: str) -> set[str]:
    """Names in a module's `.rodata` that may be crypto API requests (string
    literals); the caller keeps those K knows as `crypto-NAME`."""
    try:
        data, _ = uncompress(raw, path)
        elf = ELFFile(io.BytesIO(data))
        blobs = [s.data() for s in elf.iter_sections() if s.name.startswith(".rodata")]
    except (ELFError, ModuleError, ValueError, OSError):
        return set()
    names: set[str] = set()
    for blob in blobs:
        for chunk in blob.split(b"\0"):
            if _ALG_NAME.fullmatch(chunk):
                names.update(_alg_parts(chunk.decode()))
    return names


def _alg_parts(name: str) -> list[str]:
    """"hmac(sha256)" → itself, "hmac", "sha256": the crypto manager requests
    the template and the inner algorithm separately."""
    return [name, *(p for p in re.split(r"[(),]", name) if p and p != name)]


def requests_of(raw: bytes, path: str) -> list[str]:
    """Every name loading the module at `path` may make modprobe or the kernel
    ask for: its softdeps, its crypto requests as `crypto-NAME` aliases, and the
    digest of its signature (the kernel asks for `crypto-sha512` while it checks
    a SHA-512 signature: where the kernel builds that digest as a module, a guest
    without it refuses the module for unsupported crypto, which a node does not)."""
    try:
        data, _ = uncompress(raw, path)
        elf = ELFFile(io.BytesIO(data))
        info = elf.get_section_by_name(".modinfo")
        modinfo = parse_modinfo(info.data() if info is not None else b"")
    except (ELFError, ModuleError, ValueError, OSError):
        data, modinfo = b"", ()
    return [*module_softdeps(modinfo),
            *(f"crypto-{n}" for n in sorted(requested_algorithms(raw, path))),
            *_signature_request(data)]


def _signature_request(data: bytes) -> list[str]:
    signature = modsig.read(data).signature if data else None
    wanted = crypto_module_request(signature.hash_algo) if signature is not None else None
    return [wanted] if wanted else []


def reach(index: ModuleIndex, names: Iterable[str],
          requests: Callable[[str], Iterable[str]]) -> list[str]:
    """Relative paths (modules.dep's) of the modules `names` resolve to and of
    everything they reach through dependencies, softdeps and the names
    `requests(rel_path)` reports for each module; dependencies first."""
    seen: set[str] = set()
    todo = [m for n in names for m in index.resolve(n)]
    while todo:
        module = todo.pop()
        if module in seen or module not in index.dep.paths:
            continue
        seen.add(module)
        todo += [module_name(p) for p in index.dep.deps[module]]
        for wanted in (*index.softdeps.get(module, ()), *requests(index.dep.paths[module])):
            todo += index.resolve(wanted)
    return index.dep.closure(sorted(seen))
