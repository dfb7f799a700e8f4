"""Every command that speaks to a registry cache (`--cache`) takes the credentials and
TLS options every other registry command takes (issue 28 §8: `toolkit build --cache`
and `prove --cache` did not)."""

from __future__ import annotations

from collections.abc import Iterator

import click

from dtk.cli.main import full_cli

# `dtk module build` speaks to its cache with the Module's imageRepoSecret and TLS
# settings, as KMM would (README: The cache); `dtk render job` only names the cache
# in the files it writes (the workers' credentials are the engine's).
OWN_SETTINGS = {("module", "build"), ("render", "job")}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_a_cache_comes_with_authfile_and_tls_verify() -> None:
    with_cache = {path: {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
                  for path, command in _commands(full_cli())
                  if any("--cache" in p.opts for p in command.params)}
    assert {("build",), ("prove",), ("toolkit", "build")} <= set(with_cache)
    lacking = {" ".join(path) for path, options in with_cache.items()
               if path not in OWN_SETTINGS
               and not {"--authfile", "--tls-verify", "--no-tls-verify"} <= options}
    assert lacking == set()
