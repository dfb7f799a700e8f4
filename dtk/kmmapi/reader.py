"""Strict, path-naming access to decoded YAML: the API server's schema checks.

Every getter records a problem instead of raising and returns a harmless
default, so one run reports every schema error in a document (kubectl does the
same), each with the field path the cluster would name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


def child(path: str, key: str | int) -> str:
    """`path.key` for a field, `path[key]` for an index or for a map key that is no
    identifier (`data[.dockerconfigjson]`, as the API server writes it)."""
    if isinstance(key, int) or (path and not _IDENTIFIER.match(key)):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Reader:
    def __init__(self) -> None:
        self.errors: list[str] = []
        # The same problems for scripts: {file, document, item, path, message}; `place`
        # fills in where, once the caller knows the document.
        self.problems: list[dict[str, Any]] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")
        self.problems.append({"file": None, "document": None, "item": None, "path": path,
                              "message": message})

    def place(self, start: int, file: str, index: int, item: int | None) -> None:
        """Problems from `start` on are in document `index` (0-based) of `file`."""
        for problem in self.problems[start:]:
            if problem["file"] is None:
                problem.update(file=file, document=index + 1, item=item)

    def obj(self, value: Any, path: str, allowed: Iterable[str],
            required: Iterable[str] = ()) -> Mapping[str, Any]:
        """A mapping with only `allowed` keys; `{}` (and an error) if it is not one."""
        if not isinstance(value, Mapping):
            self.fail(path, f"must be an object, got {_kind(value)}")
            return {}
        known = set(allowed)
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {_kind(key)}")
            elif key not in known:
                self.fail(child(path, key), "unknown field")
        for key in required:
            if value.get(key) is None:
                self.fail(child(path, key), "required field is missing")
        return value

    def string(self, value: Any, path: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_kind(value)}")
            return ""
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(path, f"must be a boolean, got {_kind(value)}")
            return False
        return value

    def integer(self, value: Any, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be an integer, got {_kind(value)}")
            return None
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...] | None:
        """A list of strings; None when absent (KMM tells absent from empty)."""
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(path, f"must be a list of strings, got {_kind(value)}")
            return None
        return tuple(self.string(item, child(path, n)) for n, item in enumerate(value))

    def items(self, value: Any, path: str) -> list[tuple[str, Any]]:
        """(path, item) for each element of a list; [] (and an error) if not a list."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, got {_kind(value)}")
            return []
        return [(child(path, n), item) for n, item in enumerate(value)]

    def string_map(self, value: Any, path: str) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a map of strings, got {_kind(value)}")
            return None
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {_kind(key)}")
                continue
            # YAML reads `gpu: true` as a boolean; Kubernetes wants "true" quoted.
            out[key] = self.string(item, child(path, key))
        return out

    def ref(self, value: Any, path: str) -> str | None:
        """A LocalObjectReference's name ({name: X}); None when absent."""
        if value is None:
            return None
        body = self.obj(value, path, ["name"], ["name"])
        name = self.string(body.get("name"), child(path, "name"))
        return name or None


_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"), ((int, float), "number"), (str, "string"), (list, "list"),
    (Mapping, "object"),
)


def _kind(value: Any) -> str:
    """The JSON type name of a value, as the API server's messages say it."""
    if value is None:
        return "null"
    for types, name in _KINDS:  # bool first: it is an int subclass
        if isinstance(value, types):
            return name
    return type(value).__name__
