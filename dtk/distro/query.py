"""The kernel query language: which kernels of a catalog a user means.

`--kernels` everywhere (`dtk build`, `dtk module plan`, …) and `dtk kernels`'
filters speak it: comma-separated flavours (standard, rt, cloud, …), lines
(6.1, 6.12), `latest` (the newest release of each line and flavour), `all`;
or `@FILE`, one release a line with `#` comments. Pure, apart from reading
that file.
"""

from __future__ import annotations

import re
from pathlib import Path

from dtk.distro import KernelEntry
from dtk.errors import DtkError
from dtk.kernel import Flavour

_LINE = re.compile(r"\d+\.\d+")


def select(entries: list[KernelEntry], flavour: str | None, line: str | None,
           latest: bool) -> list[KernelEntry]:
    """Filter a catalog; `latest` keeps the newest release per (line, flavour)."""
    chosen = [e for e in entries
              if (flavour is None or e.flavour == flavour) and (line is None or e.line == line)]
    if latest:
        seen: set[tuple[str, str]] = set()
        newest = []
        for entry in chosen:  # the catalog is newest first
            if (entry.line, entry.flavour) not in seen:
                seen.add((entry.line, entry.flavour))
                newest.append(entry)
        chosen = newest
    return chosen


def read_kernel_file(path: Path) -> list[str]:
    """Releases listed in a file, one a line, `#` starting a comment."""
    try:
        lines = path.read_text().splitlines()
    except IsADirectoryError:
        raise DtkError(f"--kernels @{path}: {path} is a directory, not a file",
                       hint="give a file with one kernel release a line") from None
    except FileNotFoundError:
        raise DtkError(f"--kernels @{path}: {path} does not exist",
                       hint="give a file with one kernel release a line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DtkError(f"--kernels @{path}: cannot read it ({exc})") from None
    return [kept for line in lines if (kept := line.split("#", 1)[0].strip())]


def query_kernels(query: str, catalog: list[KernelEntry]) -> list[str]:
    """The releases `query` names (see the module docstring), newest first."""
    if query.startswith("@"):
        return read_kernel_file(Path(query[1:]))
    flavours, kernel_lines, latest = parse_query(query)
    chosen = [e for e in catalog if (not flavours or e.flavour in flavours)
              and (not kernel_lines or e.line in kernel_lines)]
    return [e.release for e in select(chosen, None, None, latest)]


def parse_query(query: str) -> tuple[set[str], set[str], bool]:
    """A query's flavours, lines and `latest`; a word that is none of them is refused
    (with no catalog: `dtk render job` checks a query before any worker reads one)."""
    flavours, kernel_lines, latest = set(), set(), False
    for word in (t.strip() for t in query.split(",") if t.strip()):
        if word in {f.value for f in Flavour}:
            flavours.add(word)
        elif _LINE.fullmatch(word):
            kernel_lines.add(word)
        elif word == "latest":
            latest = True
        elif word != "all":
            raise DtkError(f"--kernels: '{word}' is not a flavour, a line (6.1) or 'latest'",
                           hint="e.g. --kernels rt,latest or --kernels 6.1,standard "
                                "or --kernels @kernels.txt")
    return flavours, kernel_lines, latest
