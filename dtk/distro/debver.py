"""Debian version comparison (Debian Policy 5.6.12), and dependency fields. Pure."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


def _order(ch: str) -> int:
    if ch == "~":
        return -1
    if ch.isdigit():
        return 0
    if ch.isalpha():
        return ord(ch)
    return ord(ch) + 256


def _compare_part(a: str, b: str) -> int:
    """Compare upstream or revision parts: alternating non-digit and digit runs."""
    ia = ib = 0
    while ia < len(a) or ib < len(b):
        first_diff = 0
        while (ia < len(a) and not a[ia].isdigit()) or (ib < len(b) and not b[ib].isdigit()):
            ca = _order(a[ia]) if ia < len(a) and not a[ia].isdigit() else 0
            cb = _order(b[ib]) if ib < len(b) and not b[ib].isdigit() else 0
            if ca != cb:
                return ca - cb
            ia += 1
            ib += 1
        while ia < len(a) and a[ia] == "0":
            ia += 1
        while ib < len(b) and b[ib] == "0":
            ib += 1
        while ia < len(a) and a[ia].isdigit() and ib < len(b) and b[ib].isdigit():
            if not first_diff:
                first_diff = ord(a[ia]) - ord(b[ib])
            ia += 1
            ib += 1
        if ia < len(a) and a[ia].isdigit():
            return 1
        if ib < len(b) and b[ib].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in version:
        head, version = version.split(":", 1)
        epoch = int(head)
    upstream, _, revision = version.rpartition("-") if "-" in version else (version, "", "")
    return epoch, upstream, revision


def compare(a: str, b: str) -> int:
    """<0, 0 or >0 as `dpkg --compare-versions a lt|eq|gt b`."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


sort_key = functools.cmp_to_key(compare)

_OPS = {
    "=": lambda c: c == 0, ">=": lambda c: c >= 0, "<=": lambda c: c <= 0,
    ">>": lambda c: c > 0, "<<": lambda c: c < 0,
}
_REL = re.compile(r"^\s*(?P<name>[a-z0-9][a-z0-9+.-]*)(?::[a-z0-9]+)?\s*"
                  r"(?:\((?P<op>>=|<=|=|>>|<<)\s*(?P<version>[^)\s]+)\s*\))?")


@dataclass(frozen=True)
class Relation:
    """One alternative of a Depends entry: `name (op version)`."""

    name: str
    op: str | None = None
    version: str | None = None

    def satisfied_by(self, version: str) -> bool:
        if self.op is None or self.version is None:
            return True
        return bool(_OPS[self.op](compare(version, self.version)))


def parse_depends(field: str) -> list[list[Relation]]:
    """Parse a Depends field into AND-of-OR groups."""
    groups: list[list[Relation]] = []
    for group in field.split(","):
        alts = []
        for alt in group.split("|"):
            m = _REL.match(alt)
            if m and m["name"]:
                alts.append(Relation(m["name"], m["op"], m["version"]))
        if alts:
            groups.append(alts)
    return groups
