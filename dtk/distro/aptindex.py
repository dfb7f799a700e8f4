"""A private APT index of a set of sources, on the host.

dtk never touches the machine's own APT state: it runs `apt-get` with its own
state and cache directories under dtk's cache, so that `--sources FILE` can
name an air-gapped mirror and signature checking stays apt's own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from dtk import run as runner
from dtk.digest import parts_digest
from dtk.distro import aptsources
from dtk.distro.aptsources import SourceEntry
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked

Stanza = dict[str, str]

log = logging.getLogger(__name__)

OFFLINE_ENV = "DTK_OFFLINE"  # 1: never fetch; use the index there is (also `dtk --offline`)
MAX_AGE_ENV = "DTK_INDEX_MAX_AGE"  # minutes an index is used before it is refreshed
_DEFAULT_MAX_AGE_MIN = 15.0


def offline() -> bool:
    """Whether the user said this machine must not touch the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "no", "false")


def max_age_s() -> float:
    """How old an index may be before a command refreshes it ($DTK_INDEX_MAX_AGE
    minutes, 15 by default; 0 refreshes every time)."""
    text = os.environ.get(MAX_AGE_ENV, "").strip()
    if not text:
        return _DEFAULT_MAX_AGE_MIN * 60
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0:  # also refuses nan
        raise DtkError(f"{MAX_AGE_ENV}={text!r} is not a number of minutes",
                       hint=f"e.g. {MAX_AGE_ENV}=60 (an hour), or unset it for 15")
    return minutes * 60


def describe_age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} days"
_FETCH_OPTIONS = (
    "Acquire::Retries=3",
    "Acquire::http::Timeout=30",
    "Acquire::https::Timeout=30",
)


class AptIndex:
    """Package indexes of one set of sources, kept under `root`."""

    def __init__(self, entries: list[SourceEntry], root: Path) -> None:
        self.entries = entries
        self.sources_text = aptsources.render(entries)
        digest = hashlib.sha256(self.sources_text.encode()).hexdigest()[:16]
        self.root = root / "apt" / digest
        self._parts = self.root / "etc"
        self._age_said = False
        self._blocks: tuple[str, dict[str, list[str]]] | None = None
        self._blocks_lock = threading.Lock()

    def _options(self) -> list[str]:
        opts = [
            f"Dir::State={self.root / 'state'}",
            f"Dir::State::status={self.root / 'status'}",
            f"Dir::Cache={self.root / 'cache'}",
            "Dir::Etc::SourceList=/dev/null",
            f"Dir::Etc::SourceParts={self._parts}",
            "Dir::Etc::Preferences=/dev/null",
            f"Dir::Etc::PreferencesParts={self._parts}",
            "APT::Sandbox::User=root",
            "Acquire::Languages=none",
            # Indexes stay uncompressed so they can be read without apt-helper.
            "Acquire::GzipIndexes=false",
            *_FETCH_OPTIONS,
        ]
        return [arg for opt in opts for arg in ("-o", opt)]

    def _prepare(self) -> None:
        (self.root / "state/lists/partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
        self._parts.mkdir(parents=True, exist_ok=True)
        write_atomic(self._parts / "dtk.sources", self.sources_text.encode())
        status = self.root / "status"
        if not status.exists():
            write_atomic(status, b"")

    def update(self, *, max_age: float | None = None) -> None:
        """Fetch indexes unless they are younger than `max_age` seconds (default:
        `max_age_s()`); offline, use the index there is and say how old it is."""
        stamp = self.root / "updated"
        if offline():
            self._offline(stamp)
            return
        limit = max_age_s() if max_age is None else max_age
        with locked(self.root / "lock", "package index"):
            if stamp.exists() and time.time() - stamp.stat().st_mtime < limit:
                return
            self._prepare()
            result = runner.run(["apt-get", "-q", *self._options(), "update"],
                                check=False, timeout=600)
            problems = [line for line in (result.stdout + result.stderr).splitlines()
                        if line.startswith(("E:", "W:", "Err:"))]
            if result.returncode != 0 or any(p.startswith(("E:", "Err:")) for p in problems):
                raise DtkError(
                    "could not fetch package indexes from the APT sources (after retries):\n  "
                    + "\n  ".join(problems[-8:] or [result.stderr.strip()[-500:]]),
                    hint="check the network or the mirror, or pass --sources FILE naming a "
                         "reachable mirror",
                )
            write_atomic(stamp, self.sources_text.encode())

    def _offline(self, stamp: Path) -> None:
        if not stamp.exists() or not self.index_files():
            raise DtkError("offline (--offline or DTK_OFFLINE=1), and there is no package "
                           "index of these APT sources on this machine yet",
                           hint="run a command that reads the kernel catalog (e.g. `dtk "
                                "kernels`) once with network access, then go offline")
        if not self._age_said:
            self._age_said = True
            log.warning("offline: using the package index fetched %s ago",
                        describe_age(time.time() - stamp.stat().st_mtime))

    def index_files(self) -> list[Path]:
        lists = self.root / "state/lists"
        return sorted(p for p in lists.glob("*_Packages") if p.is_file())

    def stanzas(self, want: Callable[[str], bool]) -> Iterator[Stanza]:
        """Stanzas whose package name passes `want`, from every index."""
        files = self.index_files()
        if not files:
            raise DtkError("no package index is available", hint="the sources list no 'deb' "
                           "entry for this architecture, or update was never run")
        for path in files:
            yield from iter_stanzas(path.read_text(errors="replace"), want)

    def stanzas_of(self, names: Iterable[str]) -> list[Stanza]:
        """Every stanza of these packages, from an in-memory map of the index by name:
        one read of the Packages files (about 0.7 s for Debian's 50 MB) serves every
        later lookup in this process, instead of one read per lookup."""
        blocks = self._blocks_by_name()
        return [parse_stanza(block) for name in names for block in blocks.get(name, ())]

    def _blocks_by_name(self) -> dict[str, list[str]]:
        files = self.index_files()
        state = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        with self._blocks_lock:
            if self._blocks is None or self._blocks[0] != state:
                found: dict[str, list[str]] = {}
                for path in files:
                    for block in path.read_text(errors="replace").split("\n\n"):
                        m = _PACKAGE_LINE.match(block)
                        if m:
                            found.setdefault(m.group(1), []).append(block)
                self._blocks = (state, found)
            return self._blocks[1]

    def remembered_stanzas(self, want: Callable[[str], bool], name: str) -> list[Stanza]:
        """`stanzas(want)`, remembered while the index files stay as they are: reading
        every Packages file costs about a second, and every command needs the kernels.
        `name` stands for `want` in the memo's key: change it when `want` changes."""
        files = self.index_files()
        state = parts_digest(name, *(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                     for p in files))
        memo = self.root / "memo" / f"{name}-{state[7:23]}.json"
        try:
            return list(json.loads(memo.read_text()))
        except (OSError, ValueError):
            pass
        found = list(self.stanzas(want))
        for old in memo.parent.glob(f"{name}-*.json"):  # earlier states of the index
            old.unlink(missing_ok=True)
        write_atomic(memo, json.dumps(found).encode())
        return found

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        """Download `name` or `name=version` packages into dest (signature-checked)."""
        if offline():
            raise DtkError(f"offline (--offline or DTK_OFFLINE=1): cannot download "
                           f"{' '.join(packages)}",
                           hint="run this once with network access; what it fetches is "
                                "kept for offline runs")
        dest.mkdir(parents=True, exist_ok=True)
        self.update()
        before = set(dest.glob("*.deb"))
        runner.run(["apt-get", "-q", *self._options(), "download", *packages],
                   cwd=dest, timeout=900, what="downloading " + " ".join(packages))
        return sorted(set(dest.glob("*.deb")) - before) or sorted(dest.glob("*.deb"))


_PACKAGE_LINE = re.compile(r"^Package: (\S+)", re.M)


def iter_stanzas(text: str, want: Callable[[str], bool]) -> Iterator[Stanza]:
    """Parse RFC 822 stanzas cheaply: names are checked before fields are split."""
    for block in text.split("\n\n"):
        m = _PACKAGE_LINE.match(block)
        if not m or not want(m.group(1)):
            continue
        yield parse_stanza(block)


def parse_stanza(block: str) -> Stanza:
    fields: Stanza = {}
    last = ""
    for line in block.splitlines():
        if line[:1] in (" ", "\t"):
            if last:
                fields[last] += "\n" + line[1:]
            continue
        key, _, value = line.partition(":")
        last = key
        fields[key] = value.strip()
    return fields
