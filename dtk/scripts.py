"""Shell that runs inside containers and guests, kept as files under dtk/data/.

Shell is code: as `.sh` files it is linted by shellcheck in `make test`
(a Python string is checked by nothing), and it is read here at run time.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path


@cache
def text(name: str) -> str:
    """The text of dtk/data/`name`."""
    return resources.files("dtk").joinpath("data", name).read_text(encoding="utf-8")


def path(name: str) -> Path:
    """dtk/data/`name` as a file, for a script the host runs (dtk is installed as files)."""
    return Path(str(resources.files("dtk").joinpath("data", name)))
