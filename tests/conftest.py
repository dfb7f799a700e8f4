"""Shared test configuration: skips are failures (see tests/noskip.py)."""

from __future__ import annotations

pytest_plugins = ["tests.noskip"]
