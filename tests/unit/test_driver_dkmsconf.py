"""dkms.conf semantics, checked by sourcing fragments with the host's bash.

dtk itself only runs the evaluator inside a toolkit container (a dkms.conf is
someone else's code); these fragments are the test's own, so the host's bash
runs the same script here, fast and without a toolkit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk import run as runner
from dtk.driver.dkmsconf import EVAL_BROKEN, EVAL_EXCLUDED, DkmsConf, eval_script, parse_records

K61 = "6.1.0-56-amd64"
K612 = "6.12.117+deb12-amd64"


def evaluate_on_host(conf: Path, kernelver: str, *, arch: str, kernel_source_dir: str,
                     work: Path) -> DkmsConf:
    out = work / "dkmsconf.records"
    result = runner.run(["bash", "-c", eval_script(), "dtk-dkms-eval", str(out),
                         str(conf.absolute()), kernelver, arch, kernel_source_dir, "", ""],
                        check=False, timeout=120)
    assert result.returncode in (0, EVAL_EXCLUDED, EVAL_BROKEN), result.stderr
    return parse_records(out.read_bytes())


def evaluate(tmp_path: Path, text: str, kernel: str = K61, *, arch: str = "x86_64",
             config: str | None = None) -> DkmsConf:
    conf = tmp_path / "dkms.conf"
    conf.write_text(text)
    ksrc = tmp_path / "headers"
    ksrc.mkdir(exist_ok=True)
    if config is not None:
        (ksrc / ".config").write_text(config)
    return evaluate_on_host(conf, kernel, arch=arch, kernel_source_dir=str(ksrc),
                            work=tmp_path)


BASIC = """PACKAGE_NAME="hello"
PACKAGE_VERSION="1.2"
BUILT_MODULE_NAME[0]="hello"
DEST_MODULE_LOCATION[0]="/extra"
"""


def test_dkms_variables_are_set_when_the_fragment_is_sourced(tmp_path: Path) -> None:
    conf = evaluate(tmp_path, BASIC + 'BUILD_DEPENDS[0]="k-$kernelver a-$arch s-$kernel_source_dir '
                    't-$dkms_tree/$PACKAGE_NAME/$PACKAGE_VERSION u-$source_tree"\n')
    assert conf.build_depends == (f"k-{K61}", "a-x86_64", f"s-{tmp_path}/headers",
                                  "t-/var/lib/dkms/hello/1.2", "u-/usr/src")
    assert (conf.package_name, conf.package_version) == ("hello", "1.2")
    assert not conf.errors and not conf.excluded


def test_one_record_without_a_name_is_the_package(tmp_path: Path) -> None:
    """dkms's default for a single record: BUILT_MODULE_NAME is PACKAGE_NAME (no error)."""
    text = 'PACKAGE_NAME="pkg"\nPACKAGE_VERSION="1"\nDEST_MODULE_LOCATION[0]="/updates"\n'
    assert evaluate(tmp_path, text).errors == ()


@pytest.mark.parametrize(("text", "message"), [
    ('PACKAGE_NAME="x"\nPACKAGE_VERSION="1"\nBUILT_MODULE_NAME[0]="x"\n',
     "No 'DEST_MODULE_LOCATION' directive specified"),
    ('PACKAGE_NAME="x"\nPACKAGE_VERSION="1"\nBUILT_MODULE_NAME[0]="x.ko"\n'
     'DEST_MODULE_LOCATION[0]="/extra"\n', "ends in '.o' or '.ko'"),
    ('PACKAGE_NAME="x"\nPACKAGE_VERSION="1"\nBUILT_MODULE_NAME[0]="x"\n'
     'DEST_MODULE_LOCATION[0]="/opt"\n', "does not begin with '/kernel', '/updates', or '/extra'"),
    ('PACKAGE_VERSION="1"\nBUILT_MODULE_NAME[0]="x"\nDEST_MODULE_LOCATION[0]="/extra"\n',
     "No 'PACKAGE_NAME' directive specified"),
    ('PACKAGE_NAME="x"\nPACKAGE_VERSION="1"\nBUILT_MODULE_NAME[0]="a"\n'
     'BUILT_MODULE_NAME[1]="b"\nDEST_MODULE_LOCATION[0]="/extra"\nDEST_MODULE_LOCATION[1]="/extra"\n'
     'BUILT_MODULE_NAME[1]=""\n', "No 'BUILT_MODULE_NAME' directive specified for record #1"),
])
def test_broken_conf_gives_dkms_message(tmp_path: Path, text: str, message: str) -> None:
    conf = evaluate(tmp_path, text)
    assert any(message in e for e in conf.errors), conf.errors


def test_bash_syntax_error_is_reported_with_dkms_errors(tmp_path: Path) -> None:
    conf = evaluate(tmp_path, 'PACKAGE_NAME="x"\nif [ then\n')
    assert any("sourcing it with bash failed" in e for e in conf.errors)
    assert any("PACKAGE_VERSION" in e for e in conf.errors)


def test_missing_conf_is_an_error(tmp_path: Path) -> None:
    conf = evaluate_on_host(tmp_path / "nope.conf", K61, arch="x86_64",
                            kernel_source_dir="/x", work=tmp_path)
    assert conf.errors == (f"Could not locate dkms.conf file. File: {tmp_path}/nope.conf "
                           "does not exist.",)


def test_build_exclusive_kernel_is_a_bash_regex(tmp_path: Path) -> None:
    text = BASIC + 'BUILD_EXCLUSIVE_KERNEL="^6\\.(1|2)\\."\n'
    assert not evaluate(tmp_path, text, K61).excluded
    conf = evaluate(tmp_path, text, K612)
    assert conf.exclusions == (f'BUILD_EXCLUSIVE_KERNEL="^6\\.(1|2)\\." does not match kernel '
                               f"{K612}",)


def test_build_exclusive_min_and_max(tmp_path: Path) -> None:
    text = BASIC + 'BUILD_EXCLUSIVE_KERNEL_MIN="6.2"\nBUILD_EXCLUSIVE_KERNEL_MAX="6.13"\n'
    assert evaluate(tmp_path, text, K61).exclusions == (
        f'kernel {K61} is older than BUILD_EXCLUSIVE_KERNEL_MIN="6.2"',)
    assert not evaluate(tmp_path, text, K612).excluded
    text = BASIC + 'BUILD_EXCLUSIVE_KERNEL_MAX="6.5"\n'
    assert "newer than BUILD_EXCLUSIVE_KERNEL_MAX" in evaluate(tmp_path, text, K612).exclusions[0]


def test_build_exclusive_arch(tmp_path: Path) -> None:
    text = BASIC + 'BUILD_EXCLUSIVE_ARCH="^(aarch64|arm.*)$"\n'
    assert evaluate(tmp_path, text).exclusions == (
        'BUILD_EXCLUSIVE_ARCH="^(aarch64|arm.*)$" does not match architecture x86_64',)
    assert not evaluate(tmp_path, text, arch="aarch64").excluded


def test_build_exclusive_config_reads_the_kernel_config(tmp_path: Path) -> None:
    text = BASIC + 'BUILD_EXCLUSIVE_CONFIG="CONFIG_ACPI !CONFIG_PREEMPT_RT"\n'
    config = "CONFIG_ACPI=y\n# CONFIG_PREEMPT_RT is not set\n"
    assert not evaluate(tmp_path, text, config=config).excluded
    rt = "CONFIG_ACPI=y\nCONFIG_PREEMPT_RT=y\n"
    assert evaluate(tmp_path, text, config=rt).exclusions == (
        "BUILD_EXCLUSIVE_CONFIG: CONFIG_PREEMPT_RT is set in the kernel's .config",)
    assert evaluate(tmp_path, text, config="CONFIG_X=m\n").exclusions == (
        "BUILD_EXCLUSIVE_CONFIG: CONFIG_ACPI is not set in the kernel's .config",)
    # Like dkms: without a .config the directive cannot be checked and does not exclude.
    assert not evaluate(tmp_path / "headers", text).excluded


# v4l2loopback-dkms 0.12.7's own dkms.conf logic: it sources the kernel's .config.
V4L2 = """PACKAGE_NAME="v4l2loopback"
PACKAGE_VERSION="0.12.7"
if [ -f $kernel_source_dir/.config ]; then
    . $kernel_source_dir/.config
    if ! { echo "$kernelver"; echo 5.18; } | sort -V -C; then
        if [ "${CONFIG_VIDEO_DEV:-n}" = "n" ]; then
            BUILD_EXCLUSIVE_KERNEL="REQUIRES CONFIG_VIDEO_DEV"
        fi
    fi
fi
MAKE[0]="make KERNEL_DIR=${kernel_source_dir} all"
BUILT_MODULE_NAME[0]="$PACKAGE_NAME"
DEST_MODULE_LOCATION[0]="/extra"
"""


def test_conditional_conf_is_evaluated_per_kernel_config(tmp_path: Path) -> None:
    assert not evaluate(tmp_path, V4L2, config="CONFIG_VIDEO_DEV=m\n").excluded
    conf = evaluate(tmp_path, V4L2, config="CONFIG_NET=y\n")
    assert conf.exclusions == (
        f'BUILD_EXCLUSIVE_KERNEL="REQUIRES CONFIG_VIDEO_DEV" does not match kernel {K61}',)


def test_build_depends(tmp_path: Path) -> None:
    text = BASIC + 'BUILD_DEPENDS[0]="base-a"\nBUILD_DEPENDS[1]="base-b"\n'
    assert evaluate(tmp_path, text).build_depends == ("base-a", "base-b")


def test_fragment_output_does_not_corrupt_records(tmp_path: Path) -> None:
    conf = evaluate(tmp_path, 'echo "PACKAGE_NAME=evil"\necho oops >&2\n' + BASIC)
    assert conf.package_name == "hello"


def test_parse_records_rejects_truncation() -> None:
    with pytest.raises(ValueError, match="truncated"):
        parse_records(b"PACKAGE_NAME\x000\x00")
