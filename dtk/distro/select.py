"""Pick the distribution backend for the configured sources."""

from __future__ import annotations

from pathlib import Path

from dtk import paths
from dtk import run as runner
from dtk.distro import OsInfo, aptsources
from dtk.distro.aptindex import AptIndex
from dtk.distro.debian import DebianArchive
from dtk.errors import DtkError

# os-release VERSION_ID by codename, for when the sources name a release other
# than the host's (a mirror file for another release).
_DEBIAN_VERSIONS = {"bullseye": "11", "bookworm": "12", "trixie": "13", "forky": "14"}


def _os_release() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip().strip('"')
    return fields


def host_arch() -> str:
    return runner.run(["dpkg", "--print-architecture"]).stdout.strip()


def open_archive(sources: Path | None = None, cache: Path | None = None) -> DebianArchive:
    """The Debian archive named by `sources` (default: the machine's APT config)."""
    entries = aptsources.parse_file(sources) if sources else aptsources.read_host_sources()
    host = _os_release()
    codename = host.get("VERSION_CODENAME") if not sources else None
    codename = codename or aptsources.guess_codename(entries)
    if codename not in _DEBIAN_VERSIONS:
        raise DtkError(f"the APT sources are for '{codename}', which dtk does not know",
                       hint=f"dtk builds toolkits for Debian {', '.join(_DEBIAN_VERSIONS)}")
    entries = aptsources.for_release(entries, codename)
    os = OsInfo("debian", _DEBIAN_VERSIONS[codename], codename, host_arch())
    return DebianArchive(AptIndex(entries, cache or paths.cache_dir()), os)
