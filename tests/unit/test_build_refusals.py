"""What `dtk build` refuses at once, `dtk render job` refuses before writing a file
(issue 28 §6), with the same words: both run build's own check, on build's own
parser. Nothing here reaches the archive or a registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.cli.main import run_cli

KERNEL = "6.1.0-56-amd64"
REFUSED = [
    (["--dkms", "acpi-call-dkms"], "no kernel given"),
    (["--dkms", "x", "--kernel", KERNEL, "--image", "r.example/x:${KERNEL_FULL_VERSION"],
     "closing brace expected"),
    (["--dkms", "x", "--kernels", "bogus!"], "'bogus!' is not a flavour"),
    (["--dkms", "x", "--kernel", "6.1.0-56_amd64"], "is not a kernel release"),
    (["--dkms", "x", "--kernel", KERNEL, "--push"], "--push needs a registry in --image"),
    (["--kernel", KERNEL], "nothing to build"),
    (["--dkms", "x", "--kernel", KERNEL, "--build-arg", "NOEQUALS"], "is not KEY=VALUE"),
    (["--dkms", "x", "--kernel", KERNEL, "--image", "Upper/Case:${KERNEL_FULL_VERSION}"],
     "which is not a valid image reference"),
    (["--dkms", "a", "--dkms", "b", "--kernel", KERNEL, "--mod-name", "m"],
     "--mod-name names one module"),
    (["-f", "a/Containerfile", "-f", "b/Containerfile", "--context", "c", "--kernel", KERNEL],
     "--context applies to a single"),
    (["--dkms", "x", "--kernel", KERNEL, "--shard", "3/2"], "is not I/N"),
]


@pytest.mark.parametrize(("args", "words"), REFUSED, ids=[w for _a, w in REFUSED])
def test_render_refuses_what_build_refuses_with_builds_words(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        words: str) -> None:
    assert run_cli(["build", *args]) == 2
    build_says = capsys.readouterr().err
    assert words in build_says
    for target in ("kubernetes", "github", "gitlab"):
        out = tmp_path / target
        assert run_cli(["render", "job", "--shards", "2", "--dtk-image", "r.example/dtk:1",
                        "--cache", "r.example/cache", "--target", target, "-o", str(out),
                        "--", *args]) == 2
        assert capsys.readouterr().err == build_says
        assert not out.exists()
