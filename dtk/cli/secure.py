"""The Secure Boot options `vmtest`, `prove` and `module vmtest` share, checked before
anything is built or booted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from dtk.errors import DtkError
from dtk.vm.secureboot import Enrolment, SecureBootSpec, read_inputs

F = TypeVar("F", bound=Callable[..., object])


def secure_boot_options(func: F) -> F:
    options = [
        click.option("--secure-boot", is_flag=True,
                     help="Boot as a Secure Boot machine does: OVMF with Secure Boot on, "
                          "Debian's signed shim and GRUB, the kernel package's signed "
                          "vmlinuz."),
        click.option("--enrol", "enrol", type=click.Path(path_type=Path, dir_okay=False,
                                                         exists=True),
                     help="Certificate (PEM or DER) enrolled as a MOK in the VM's firmware "
                          "first; implies --secure-boot."),
        click.option("--enrol-with", type=click.Choice([e.value for e in Enrolment]),
                     default=Enrolment.OFFLINE.value, show_default=True,
                     help="offline: written into the variable store (every run); "
                          "mokmanager: mokutil --import in a guest, then MokManager driven "
                          "over the console, as a user does (once per certificate, cached)."),
        click.option("--vars", "vars_path", type=click.Path(path_type=Path, dir_okay=False,
                                                            exists=True),
                     help="OVMF variable store to start from (default: Debian's "
                          "OVMF_VARS_4M.ms.fd, Microsoft's keys, Secure Boot on)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def secure_boot_spec(*, secure_boot: bool, enrol: Path | None, enrol_with: str,
                     vars_path: Path | None) -> SecureBootSpec | None:
    """The checked spec, or None for a plain boot; every input error before any work."""
    if not secure_boot and enrol is None:
        if vars_path is not None:
            raise DtkError("--vars is for Secure Boot boots", hint="add --secure-boot")
        return None
    certs, template = read_inputs((enrol,) if enrol else (), vars_path)
    return SecureBootSpec(certs, Enrolment(enrol_with), template)
