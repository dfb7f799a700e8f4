"""Variable substitution exactly as KMM does it: `github.com/a8m/envsubst/parse` v1.4.2
with no restrictions (`internal/utils/replaceStrings.go`), not a shell and not Go's
`os.Expand`.

Its rules, which this module follows token for token (a lexer, then a parser):

* `$NAME` and `${NAME}`; a name is letters, digits and `_` (a digit may start it);
  `$_` alone is text; an unknown variable is empty;
* `$$` is one `$`; a `$` before anything else stays as it is;
* `${V:-d}` / `${V:=d}`: `d` when V is unset or empty; `${V-d}` / `${V=d}`: `d` when V
  is unset; `${V+a}` and `${V:+a}`: `a` when V is set (even empty), else nothing;
  `d` is either one `$VAR` or literal text (a `$VAR` after text stays literal);
* an unclosed `${` (end of text or a newline before `}`) is an error.

The one deliberate difference: where the Go parser never returns (a `${V:-$_}`, whose
lexer ends the text inside the braces), this raises the same "closing brace
expected" error instead.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dtk.errors import DtkError


class _T(enum.IntEnum):
    """Token types, in the Go lexer's order (the parser compares them with >=)."""

    ERROR = 1
    EOF = 2
    TEXT = 3
    PLUS = 4
    DASH = 5
    EQUALS = 6
    COLON_EQUALS = 7
    COLON_DASH = 8
    COLON_PLUS = 9
    VARIABLE = 10
    LEFT = 11
    RIGHT = 12


_COLON_OPS = {"-": _T.COLON_DASH, "=": _T.COLON_EQUALS, "+": _T.COLON_PLUS}
_OPS = {"+": _T.PLUS, "-": _T.DASH, "=": _T.EQUALS}
_CLOSING = "closing brace expected"


def _alnum(ch: str) -> bool:
    """Go's `r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)`."""
    return ch == "_" or ch.isalpha() or (ch != "" and unicodedata.category(ch) == "Nd")


@dataclass
class _Lexer:
    text: str
    items: list[tuple[_T, str]] = field(default_factory=list)
    start: int = 0
    pos: int = 0
    width: int = 0
    last: int = 0  # where the most recent item started
    depth: int = 0  # open `${`

    def next(self) -> str:
        if self.pos >= len(self.text):
            self.width = 0
            return ""
        self.width = 1
        self.pos += 1
        return self.text[self.pos - 1]

    def peek(self) -> str:
        ch = self.next()
        self.pos -= self.width
        return ch

    def emit(self, kind: _T) -> None:
        self.items.append((kind, self.text[self.start:self.pos]))
        self.last, self.start = self.start, self.pos

    def opens_braces(self) -> bool:
        return self.text.startswith("${", self.last)


_State = Callable[[_Lexer], "_StateResult"]
_StateResult = _State | None


def _lex_text(lx: _Lexer) -> _StateResult:
    while True:
        ch = lx.next()
        if ch == "":
            break
        if ch != "$":
            continue
        if lx.pos - 1 > lx.start:
            lx.pos -= 1
            lx.emit(_T.TEXT)
            lx.pos += 1
        after = lx.peek()
        if after == "$":
            lx.start = lx.pos  # the first `$` is dropped
            lx.next()
            lx.emit(_T.TEXT)
        elif after == "{":
            lx.next()
            lx.depth += 1
            lx.emit(_T.LEFT)
            return _lex_operator
        elif _alnum(after):
            return _lex_variable
    if lx.pos > lx.start:
        lx.emit(_T.TEXT)
    lx.emit(_T.EOF)
    return None


def _lex_variable(lx: _Lexer) -> _StateResult:
    while _alnum(lx.next()):
        pass
    lx.pos -= lx.width
    if lx.text[lx.start:lx.pos] in ("_", "$_"):
        return _lex_text
    lx.emit(_T.VARIABLE)
    return _lex_operator if lx.depth > 0 else _lex_text


def _lex_operator(lx: _Lexer) -> _StateResult:
    ch = lx.next()
    if ch == "}":
        lx.depth -= 1
        lx.emit(_T.RIGHT)
        return _lex_text
    if ch in ("", "\r", "\n"):
        lx.items.append((_T.ERROR, _CLOSING))
        return None
    if _alnum(ch) and lx.opens_braces():
        return _lex_variable
    if ch in _OPS:
        lx.emit(_OPS[ch])
    elif ch == ":":
        op = _COLON_OPS.get(lx.next())
        if op is not None:
            lx.emit(op)
    return _lex_substitution


def _lex_substitution(lx: _Lexer) -> _StateResult:
    ch = lx.next()
    if ch == "}":
        lx.depth -= 1
        lx.emit(_T.RIGHT)
        return _lex_text
    if ch in ("", "\r", "\n"):
        lx.items.append((_T.ERROR, _CLOSING))
        return None
    if ch == "$" or (_alnum(ch) and lx.opens_braces()):
        return _lex_variable
    lx.emit(_T.TEXT)
    return _lex_substitution


def _tokens(text: str) -> list[tuple[_T, str]]:
    lx = _Lexer(text)
    state: _StateResult = _lex_text
    while state is not None:
        state = state(lx)
    return lx.items


class _Parser:
    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        self.items = _tokens(text)
        self.at = 0
        self.env = env

    def next(self) -> tuple[_T, str]:
        item = self.peek()
        self.at += 1
        return item

    def peek(self) -> tuple[_T, str]:
        # Past the end only inside braces (see the module's note): an error, not a hang.
        return self.items[self.at] if self.at < len(self.items) else (_T.ERROR, _CLOSING)

    def value(self, name: str) -> str:
        return self.env.get(name, "")

    def parse(self) -> str:
        out: list[str] = []
        while True:
            kind, text = self.next()
            if kind is _T.EOF:
                return "".join(out)
            if kind is _T.ERROR:
                raise ValueError(text)
            if kind is _T.VARIABLE:
                out.append(self.value(text.removeprefix("$")))
            elif kind is _T.LEFT and self.peek()[0] is _T.VARIABLE:
                out.append(self.action())
            else:
                out.append(text)

    def action(self) -> str:
        name = self.next()[1]
        op: _T | None = None
        default: Callable[[], str] | None = None
        while True:
            kind, text = self.next()
            if kind is _T.RIGHT:
                break
            if kind is _T.ERROR:
                raise ValueError(text)
            if kind is _T.VARIABLE:
                other = text.removeprefix("$")
                default = lambda other=other: self.value(other)  # noqa: E731
            elif kind is _T.TEXT:
                literal = text
                while self.peek()[0] not in (_T.RIGHT, _T.ERROR, _T.EOF):
                    literal += self.next()[1]
                default = lambda literal=literal: literal  # noqa: E731
            else:
                op = kind
        return self._substitution(name, op, default)

    def _substitution(self, name: str, op: _T | None,
                      default: Callable[[], str] | None) -> str:
        if op is not None and op >= _T.PLUS and default is not None:
            if op in (_T.COLON_DASH, _T.COLON_EQUALS):
                return self.value(name) or default()
            if op in (_T.PLUS, _T.COLON_PLUS):
                return default() if name in self.env else ""
            if name not in self.env:
                return default()
        return self.value(name)


def envsubst(template: str, variables: Mapping[str, str]) -> str:
    """`template` with `variables` substituted as KMM substitutes them."""
    try:
        return _Parser(template, variables).parse()
    except ValueError as exc:
        raise DtkError(f"cannot substitute {template!r}: {exc}",
                       hint="KMM fails the same way: close every ${ with } on the same line "
                            "(write $$ for a literal $)") from None
