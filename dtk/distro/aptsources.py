"""APT source lists: read the machine's (or a user's file), render them back. Pure
except for `read_host_sources`, which only reads files."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dtk.errors import DtkError


@dataclass(frozen=True)
class SourceEntry:
    """One deb822 stanza (a one-line entry is converted to one of these)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = field(default=())

    def render(self) -> str:
        lines = [
            f"Types: {' '.join(self.types)}",
            f"URIs: {' '.join(self.uris)}",
            f"Suites: {' '.join(self.suites)}",
        ]
        if self.components:
            lines.append(f"Components: {' '.join(self.components)}")
        lines += [f"{k}: {v}" for k, v in self.options]
        return "\n".join(lines) + "\n"


_ONE_LINE = re.compile(r"^(?P<type>deb|deb-src)\s+(?:\[(?P<opts>[^\]]*)\]\s+)?"
                       r"(?P<uri>\S+)\s+(?P<suite>\S+)(?P<comps>(?:\s+\S+)*)\s*$")
_OPTION_NAMES = {"signed-by": "Signed-By", "arch": "Architectures", "trusted": "Trusted"}


def parse_one_line(text: str, origin: str = "<sources>") -> list[SourceEntry]:
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _ONE_LINE.match(line)
        if not m:
            raise DtkError(f"{origin}:{number}: cannot parse APT source line: {raw.strip()}",
                           hint="use 'deb [signed-by=KEYRING] URI SUITE COMPONENT…' or deb822")
        options = []
        for opt in (m["opts"] or "").split():
            key, _, value = opt.partition("=")
            options.append((_OPTION_NAMES.get(key, key), value))
        entries.append(SourceEntry((m["type"],), (m["uri"],), (m["suite"],),
                                   tuple(m["comps"].split()), tuple(options)))
    return entries


def parse_deb822(text: str, origin: str = "<sources>") -> list[SourceEntry]:
    entries = []
    for block in re.split(r"\n\s*\n", text):
        fields = _fields(block)
        if not fields or fields.get("enabled", "yes").lower() == "no":
            continue
        missing = [k for k in ("types", "uris", "suites") if k not in fields]
        if missing:
            raise DtkError(f"{origin}: deb822 stanza without {', '.join(missing)}",
                           hint="each stanza needs Types, URIs and Suites")
        skip = {"types", "uris", "suites", "components", "enabled"}
        options = tuple((_canonical(k), v) for k, v in fields.items() if k not in skip)
        entries.append(SourceEntry(tuple(fields["types"].split()), tuple(fields["uris"].split()),
                                   tuple(fields["suites"].split()),
                                   tuple(fields.get("components", "").split()), options))
    return entries


def _canonical(key: str) -> str:
    return "-".join(part.capitalize() for part in key.split("-"))


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = None
    for raw in block.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw[0].isspace() and last:
            fields[last] += "\n" + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        fields[last] = value.strip()
    return fields


def parse_file(path: Path) -> list[SourceEntry]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DtkError(f"cannot read APT sources file {path}: {exc.strerror}",
                       hint="pass an existing file to --sources") from None
    if path.suffix == ".sources" or re.search(r"(?mi)^types:", text):
        return parse_deb822(text, str(path))
    return parse_one_line(text, str(path))


def read_host_sources(root: Path = Path("/")) -> list[SourceEntry]:
    """The machine's own APT configuration, as apt itself would read it."""
    etc = root / "etc/apt"
    files = [etc / "sources.list"] if (etc / "sources.list").exists() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    entries = [e for f in files for e in parse_file(f)]
    if not entries:
        raise DtkError(f"no APT sources found under {etc}",
                       hint="configure the machine's APT sources or pass --sources FILE")
    return entries


def for_release(entries: list[SourceEntry], codename: str) -> list[SourceEntry]:
    """Binary sources of one distribution release (bookworm, bookworm-updates, …).

    Third-party repositories are dropped: they do not ship kernels, and their
    keyrings are not in a minimal root, so apt would refuse them there.
    """
    kept = []
    for entry in entries:
        unsafe = signature_bypass(entry)
        if unsafe:
            raise DtkError(f"APT source {' '.join(entry.uris)} sets {unsafe}, which turns off "
                           "package signature checks",
                           hint="dtk never disables package signature checks; give the "
                                "source a Signed-By keyring instead")
        suites = tuple(s for s in entry.suites if s.split("-", 1)[0].split("/", 1)[0] == codename)
        if "deb" in entry.types and suites:
            kept.append(SourceEntry(("deb",), entry.uris, suites, entry.components,
                                    entry.options))
    if not kept:
        raise DtkError(f"no APT source for the '{codename}' release",
                       hint="add one to the machine's APT sources or pass --sources FILE")
    return kept


# The sources.list(5) options that make apt accept unsigned, weakly signed or
# downgraded-to-unsigned indexes; one-line and deb822 spellings, with any '+'/'-'.
_BYPASSES = ("trusted", "allow-insecure", "allow-weak", "allow-downgrade-to-insecure")
_APT_TRUE = ("yes", "true", "with", "on", "enable")
_STRTOL = re.compile(r"[ \t\n\v\f\r]*(?P<sign>[+-]?)"
                     r"(?P<digits>0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def signature_bypass(entry: SourceEntry) -> str | None:
    """`option=value` of the first option that turns signature checks off, if any."""
    for key, value in entry.options:
        if key.lower().rstrip("+-") in _BYPASSES and apt_true(value):
            return f"{key.lower()}={value}"
    return None


def apt_true(text: str) -> bool:
    """Whether apt's StringToBool (apt-pkg/contrib/strutl.cc) may read `text` as true:
    `strtol(text, 0)` cast to int is 1, or a word from its list in any case. Older apt
    took a number prefix ("1x"), newer the whole text only: either counts here."""
    if text.lower() in _APT_TRUE:
        return True
    m = _STRTOL.match(text)
    if not m:
        return False
    digits = m["digits"]
    number = int(digits, 16 if digits[:2] in ("0x", "0X") else 8 if digits[0] == "0" else 10)
    number = -number if m["sign"] == "-" else number
    number = max(-(1 << 63), min(number, (1 << 63) - 1))  # strtol's long saturates
    return (number + (1 << 31)) % (1 << 32) - (1 << 31) == 1  # then C truncates it to int


def guess_codename(entries: list[SourceEntry]) -> str:
    """The release most sources point at: 'bookworm' for bookworm + bookworm-security."""
    counts = Counter(s.split("-", 1)[0].split("/", 1)[0]
                     for e in entries if "deb" in e.types for s in e.suites)
    if not counts:
        raise DtkError("the APT sources name no binary suite",
                       hint="add a 'deb' source or pass --sources FILE")
    return counts.most_common(1)[0][0]


def render(entries: list[SourceEntry]) -> str:
    return "\n".join(e.render() for e in entries)
