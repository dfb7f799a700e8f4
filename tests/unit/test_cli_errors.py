"""No command ever answers with a traceback.

Every command is driven with malformed arguments (hypothesis draws the bad
values): each must exit 2 with one screen naming the problem, before it does
any work. An exception dtk did not expect is reported as a bug on one screen,
with the traceback kept in a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtk.cli.main import cli, full_cli, run_cli

FULL = full_cli()


def commands(group: click.Group = FULL, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


COMMANDS = list(commands())
NUMERIC = (click.types.IntParamType, click.types.FloatParamType)


def bad_value_options(command: click.Command) -> list[tuple[str, click.Option]]:
    """Options whose values click itself checks: numbers and choices."""
    out = []
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and param.opts and \
                isinstance(param.type, (*NUMERIC, click.Choice)):
            out.append((param.opts[-1], param))
    return out


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = run_cli(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_one_screen(text: str) -> None:
    assert "Traceback" not in text, text
    assert len(text.splitlines()) <= 30, text


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.text(alphabet=st.characters(codec="utf-8"), min_size=1,
                    max_size=12).filter(lambda s: not s.startswith("-")))
def test_unknown_options_are_usage_errors(capsys: pytest.CaptureFixture[str],
                                          path: tuple[str, ...], command: click.Command,
                                          junk: str) -> None:
    code, text = run(capsys, [*path, f"--no-such-option-{junk}"])
    assert code == 2
    assert_one_screen(text)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.text(alphabet="abcxyz!@# ", min_size=1, max_size=8))
def test_bad_option_values_are_usage_errors(capsys: pytest.CaptureFixture[str],
                                            path: tuple[str, ...], command: click.Command,
                                            junk: str) -> None:
    for opt, _param in bad_value_options(command):
        code, text = run(capsys, [*path, opt, f"not-{junk}"])
        assert code == 2, (opt, text)
        assert_one_screen(text)


def test_errors_are_json_on_stdout_under_json(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    code = run_cli(["build", "-f", str(tmp_path / "nope"), "--kernel", "6.1.0-57-amd64",
                    "--json"])
    out = capsys.readouterr()
    assert code == 2
    error = json.loads(out.out)["error"]
    assert error["kind"] == "input" and "does not exist" in error["message"]


def test_an_unexpected_exception_is_a_bug_report_not_a_traceback(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTK_STATE_DIR", str(tmp_path))

    @click.command("dtk-test-boom")
    def boom() -> None:
        raise RuntimeError("an internal invariant broke")

    cli.add_command(boom)
    try:
        code, text = run(capsys, ["dtk-test-boom"])
    finally:
        cli.commands.pop("dtk-test-boom")
    assert code == 70
    assert "dtk hit a bug: RuntimeError: an internal invariant broke" in text
    assert_one_screen(text)
    (crash,) = (tmp_path / "crashes").glob("*.log")
    assert "Traceback" in crash.read_text()
    assert str(crash) in text
