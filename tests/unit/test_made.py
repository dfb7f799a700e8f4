"""dtk's records of the images it made: only a well-formed record names an image."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dtk.engine import made

ID = "a" * 64


def test_records_round_trip_and_ignore_what_dtk_did_not_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTK_STATE_DIR", str(tmp_path))
    made.record("sha256:" + ID, "localhost/driver-toolkit:6.1.0-57-amd64", "toolkit")
    (tmp_path / "images" / f"{'b' * 64}.json").write_text("{not json")
    (tmp_path / "images" / f"{'c' * 64}.json").write_text(  # names another image
        f'{{"image_id": "{ID}", "name": "x", "kind": "toolkit"}}')
    assert made.records() == {ID: made.Made(ID, "localhost/driver-toolkit:6.1.0-57-amd64",
                                            "toolkit")}


def test_forget_missing_keeps_records_newer_than_the_listing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTK_STATE_DIR", str(tmp_path))
    made.record(ID, "old", "driver")
    old = time.time() - 60
    os.utime(tmp_path / "images" / f"{ID}.json", (old, old))
    made.record("d" * 64, "committed after the listing", "driver")
    made.forget_missing(set(), listed_at=time.time() - 30)
    assert set(made.records()) == {"d" * 64}
