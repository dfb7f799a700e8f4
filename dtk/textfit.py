"""Human text fitted to the terminal: lines wrapped at spaces, table cells cut in
the middle, never through the part that tells two rows apart.

Every line dtk prints for a person fits the terminal ($COLUMNS, else the
terminal's own width, else 120: a pipe or a file has no width, and 120 keeps a
log readable). `--json` keeps every value whole; these functions only shape
what a person reads.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Sequence

ELLIPSIS = "…"
DEFAULT_WIDTH = 120
_NARROWEST = 20  # below this, a line is not wrapped further: a word per line reads worse


def width() -> int:
    """$COLUMNS, else the terminal's width, else 120."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def wrap(text: str, limit: int | None = None, indent: str = "    ") -> list[str]:
    """`text`'s lines, each wrapped at spaces to `limit` columns; the continuation
    of a wrapped line is indented (by `indent` beyond the line's own indentation).
    A word longer than a line is cut in the middle (`elide`), never broken across
    lines: a path or an image reference copied off the screen is whole or marked.
    A shell command (a line that starts with `command: `, as dtk's reproducers do)
    is wrapped with ` \\` at each break, so that it still pastes into a shell."""
    limit = limit or width()
    out: list[str] = []
    for line in text.splitlines() or [""]:
        if len(line) <= limit:
            out.append(line)
            continue
        lead = line[:len(line) - len(line.lstrip())]
        shell = line.lstrip().startswith("command: ")
        room = max(limit, _NARROWEST) - (2 if shell else 0)
        words = [w if len(w) <= room - len(lead) - len(indent) or shell else
                 elide(w, room - len(lead) - len(indent)) for w in line.split()]
        wrapped = textwrap.wrap(" ".join(words), room, initial_indent=lead,
                                subsequent_indent=lead + indent, break_long_words=False,
                                break_on_hyphens=False)
        out += [w + " \\" for w in wrapped[:-1]] + wrapped[-1:] if shell else wrapped
    return out


def elide(text: str, limit: int) -> str:
    """`text` in at most `limit` columns: its head and tail, the middle replaced by
    '…' (a tag or a file name at the end is what tells things apart more often than
    the registry or directory at the start)."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return ELLIPSIS[:limit]
    head = (limit - 1) * 2 // 5
    tail = limit - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def fit_column(values: Sequence[str], limit: int) -> list[str]:
    """Each value cut to `limit` columns, keeping what tells the values apart whole
    where it fits: the part between what all of them share at the start and at the
    end. The cut goes into the shared start (after a little of it, so the reader
    still sees where the value begins), else into the shared end, else both; only a
    difference wider than the column itself is cut through."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) < 2:
        return [elide(v, limit) for v in values]
    prefix = _shared_start(distinct)
    suffix = _shared_start([v[prefix:][::-1] for v in distinct])
    return [_cut_around(v, limit, prefix, len(v) - suffix) for v in values]


def _shared_start(values: Sequence[str]) -> int:
    """How many characters all `values` start with."""
    shortest = min(values, key=len)
    for i, char in enumerate(shortest):
        if any(v[i] != char for v in values):
            return i
    return len(shortest)


def _cut_around(text: str, limit: int, start: int, end: int) -> str:
    """`text` in `limit` columns with text[start:end] (what differs) kept whole."""
    if len(text) <= limit:
        return text
    drop = len(text) - limit + 1  # characters removed; one more for the '…'
    enough = max(1, min(limit // 4, 6))  # of a shared part, to show what it is
    head_room, tail_room = start - drop, (len(text) - end) - drop
    if head_room >= enough or (head_room >= 1 and tail_room < enough):
        head = min(head_room, max(1, limit // 4))  # one cut, inside the shared start
        return text[:head] + ELLIPSIS + text[head + drop:]
    if tail_room >= 1:  # one cut, inside the shared end
        keep = min(tail_room, max(1, limit // 4))
        return text[:len(text) - keep - drop] + ELLIPSIS + text[len(text) - keep:]
    tail = len(text) - end
    # Both shared parts together: a little of each kept, and what differs between them.
    budget = limit - (end - start) - (start > 0) - (tail > 0)  # one '…' per cut side
    if budget >= 0:
        left = min(start, budget // 2)
        right = min(tail, budget - left)
        left = min(start, budget - right)
        return (text[:left] + (ELLIPSIS if left < start else "") + text[start:end]
                + (ELLIPSIS if right < tail else "") + text[len(text) - right:])
    return elide(text, limit)
