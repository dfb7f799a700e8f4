"""`dtk toolkit …` (filled in by the toolkit feature)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    del group
