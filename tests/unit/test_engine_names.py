"""User strings reach buildah as arguments: one that looks like an option is refused
before any command runs (and dtk ends options with '--' as well)."""

from __future__ import annotations

import pytest

from dtk.engine import buildah
from dtk.errors import DtkError


@pytest.mark.parametrize("name", ["--all", "-a", "", "two words", "--help"])
def test_names_that_would_be_options_are_refused(name: str) -> None:
    with pytest.raises(DtkError, match="is not an image name"):
        buildah.image_exists(name)
    with pytest.raises(DtkError, match="is not an image name"), \
            buildah.working_container(name):
        pass


def test_real_names_pass() -> None:
    for name in ("localhost/dtk-driver/x:6.1.0-57-amd64", "127.0.0.1:5000/a/b@sha256:" + "0" * 64):
        assert buildah.ref(name) == name
