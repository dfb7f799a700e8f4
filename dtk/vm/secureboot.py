"""Booting a kernel the way a Debian machine with Secure Boot boots it, with the user's
certificate enrolled as a MOK. The recipe every Secure Boot boot of dtk follows
(`vmtest --secure-boot`, `prove`, `module vmtest`, and later the node's):

1. the parts (dtk.vm.firmware): OVMF, shim, MokManager, GRUB from the archive;
2. a variable store with the certificate in MokList, cached per certificate (and store
   template), copied for each boot. Two ways to enrol, giving the same MokList bytes:
   - offline (the default, every run): virt-fw-vars writes MokList (dtk.vm.varstore);
   - the user's way (once per certificate, then cached): `mokutil --import` in a guest,
     then MokManager on the next boot, driven over the serial console
     (dtk.vm.mokmanager), as a person at the machine would;
3. the ESP with the kernel package's signed vmlinuz, cached per kernel (dtk.vm.esp);
4. per boot, a payload disk with the initramfs dtk makes and the command line, and the
   boot through the chain (dtk.vm.chain).
"""

from __future__ import annotations

import enum
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dtk import paths, scripts
from dtk import run as runner
from dtk.digest import file_digest, parts_digest
from dtk.distro.debian import DebianArchive
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel import bzimage
from dtk.lock import locked
from dtk.vm import chain, cpio, guest, kernels, qemu, tools, varstore
from dtk.vm.cache import vm_cache
from dtk.vm.esp import ensure_esp, write_payload
from dtk.vm.firmware import FirmwareParts, copy_store, ensure_parts
from dtk.vm.mokmanager import MokManagerDriver, MokManagerError, Stage
from dtk.vm.verdict import VmEnd

# What a Secure Boot boot adds to a plain one's allowance: the firmware, shim and GRUB
# reading and verifying the kernel under TCG (8-12 s measured at low load, up to 45 s
# under load on 2 shared cores).
EXTRA_S = 120.0
_ENROL_TIMEOUT_S = 300.0
_STORE_VERSION = "dtk-sb-store-1"


class Enrolment(enum.StrEnum):
    OFFLINE = "offline"  # virt-fw-vars writes MokList: every run, a second or two
    MOKMANAGER = "mokmanager"  # mokutil --import, then MokManager: once per certificate


@dataclass(frozen=True)
class SecureBootSpec:
    """What the user asks for: checked inputs (dtk.vm.varstore's checks)."""

    certs: tuple[bytes, ...] = ()  # DER certificates to enrol as MOKs
    enrolment: Enrolment = Enrolment.OFFLINE
    vars_template: Path | None = None  # None: Debian's OVMF_VARS_4M.ms.fd

    @property
    def identity(self) -> str:
        """What a result of booting with this set-up is keyed by (the firmware parts are
        the archive's current ones, which decide nothing about a module's verdict)."""
        template = file_digest(self.vars_template) if self.vars_template else "debian"
        return parts_digest(_STORE_VERSION, self.enrolment.value, template,
                            *(d.hex() for d in self.certs), length=24)


@dataclass(frozen=True)
class Prepared:
    """The parts and the enrolled store every boot of a run copies."""

    spec: SecureBootSpec
    firmware: FirmwareParts
    store: Path
    store_key: str

    @property
    def identity(self) -> str:
        """What a cached proof made with this set-up is keyed by."""
        return parts_digest(self.firmware.key, self.store_key, length=24)


def read_inputs(cert_paths: tuple[Path, ...], vars_path: Path | None) -> tuple[
        tuple[bytes, ...], Path | None]:
    """The certificates (DER) and the store template, checked before anything else runs:
    each error is the user's, on one screen."""
    ders = []
    for path in cert_paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DtkError(f"cannot read the certificate {path}: {exc.strerror}") from None
        ders.append(varstore.check_certificate(data, str(path)))
    if vars_path is not None:
        try:
            data = vars_path.read_bytes()
        except OSError as exc:
            raise DtkError(f"cannot read the variable store {vars_path}: {exc.strerror}") \
                from None
        varstore.check_store(data, str(vars_path))
    return tuple(ders), vars_path


def prepare(spec: SecureBootSpec, archive: Callable[[], DebianArchive],
            first_kernel: kernels.KernelSource) -> Prepared:
    """The parts and the enrolled store (made once per certificate and template, or
    taken from the cache). The user's way boots `first_kernel` twice."""
    for n, der in enumerate(spec.certs):  # virt-fw-vars answers a bad one with a traceback
        varstore.check_certificate(der, f"certificate {n + 1} to enrol")
    firmware = ensure_parts(archive())
    template = spec.vars_template or firmware.vars_template
    varstore.check_store(template.read_bytes(), str(template))
    key = parts_digest(_STORE_VERSION, spec.enrolment.value, file_digest(template),
                       *(d.hex() for d in spec.certs),
                       firmware.key if spec.enrolment is Enrolment.MOKMANAGER else "",
                       length=24)
    store = vm_cache() / "secure-boot" / "vars" / f"{key}.fd"
    store.parent.mkdir(parents=True, exist_ok=True)
    with locked(store.with_suffix(".lock")):
        if not store.exists():
            varstore.check_secure_boot(varstore.read_variables(template), str(template))
            if not spec.certs:
                shutil.copyfile(template, store.with_suffix(".tmp"))
                store.with_suffix(".tmp").replace(store)
            elif spec.enrolment is Enrolment.OFFLINE:
                varstore.add_moks_offline(template, spec.certs, store)
            else:
                enrol_with_mokmanager(template, spec.certs, firmware, source=first_kernel,
                                      archive=archive, dest=store)
            check_mok_list(store, spec.certs)  # once, when made: the cache holds it since
    return Prepared(spec, firmware, store, key)


def check_mok_list(store: Path, ders: tuple[bytes, ...]) -> None:
    """The store holds exactly these MOKs, as mokutil and MokManager write them."""
    if not ders:
        return
    found = varstore.read_variables(store).get("MokList")
    if found is None or found.data != varstore.mok_list(ders) or found.attributes != 3 or \
            found.guid != str(varstore.SHIM_GUID):
        store.unlink(missing_ok=True)
        raise DtkError("the variable store does not hold the certificate in MokList as "
                       "MokManager writes it", hint="report this to dtk with the store")


def require_signed(parts: kernels.KernelParts) -> None:
    """GRUB boots only a kernel signed for shim: said before booting, not at GRUB."""
    if not bzimage.authenticode_signed(parts.signed_image.read_bytes()):
        raise DtkError(f"the vmlinuz of {parts.release} ({parts.source.origin}) carries no "
                       "Authenticode signature: GRUB refuses it under Secure Boot (bad shim "
                       "signature)", hint="Secure Boot boots need the distribution's signed "
                       f"package (linux-image-{parts.release}, not -unsigned)")


def boot_kernel(prepared: Prepared, parts: kernels.KernelParts, initrd: Path, private: Path,
                cmdline: str, *, memory_mb: int, cpus: int, accel: str, timeout_s: float,
                console: Path) -> VmEnd:
    """One Secure Boot boot of `parts` with `initrd`; the report lands in
    private/report.txt, as for a plain boot."""
    require_signed(parts)
    esp = ensure_esp(prepared.firmware, parts.signed_image)
    store = copy_store(prepared.store, private / "vars.fd")
    payload = write_payload(private / "payload.img", initrd, cmdline)
    spec = chain.ChainSpec(prepared.firmware.code, store, esp, payload, private / "report.txt",
                           memory_mb=memory_mb, accel=accel, cpus=cpus)
    return chain.boot(spec, timeout_s=timeout_s + EXTRA_S, console_log=console)


def secure_boot_on(facts: dict[str, str]) -> bool:
    """The guest's SecureBoot variable as efivarfs shows it (od -tx1): four attribute
    bytes, then the value, 01 when on."""
    found = facts.get("secureboot", "").split()
    return len(found) == 5 and found[4] == "01"


def secure_boot_problem(facts: dict[str, str]) -> str:
    """Why a guest that booted through the chain is no Secure Boot proof; '' if it is."""
    if secure_boot_on(facts):
        return ""
    state = facts.get("secureboot", "").strip() or "absent"
    return (f"the guest booted with Secure Boot off (SecureBoot variable: {state}): the "
            "variable store enrols no Platform Key, or the firmware is not the Secure Boot "
            "build")


def summary(boot: dict[str, str]) -> str:
    """One line for people (under 100 columns) of what `describe` recorded."""
    lockdown = re.search(r"\[(\w+)\]", boot.get("lockdown", ""))
    return (f"Secure Boot {boot['secure_boot']} (OVMF, shim, GRUB, signed kernel), lockdown "
            f"{lockdown.group(1) if lockdown else '?'}, sig_enforce "
            f"{boot.get('sig_enforce') or '?'}, MOK {boot['enrolment']}")


def describe(prepared: Prepared, facts: dict[str, str]) -> dict[str, str]:
    """What a result says about the boot: the chain, and what the kernel set."""
    return {"chain": "OVMF + shim + GRUB + signed kernel",
            "enrolment": prepared.spec.enrolment.value if prepared.spec.certs else "none",
            "secure_boot": "on" if secure_boot_on(facts) else "off",
            "lockdown": facts.get("lockdown", ""), "sig_enforce": facts.get("sig_enforce", "")}


# --- the user's way: mokutil --import, then MokManager --------------------------------

def enrol_with_mokmanager(template: Path, ders: tuple[bytes, ...], firmware: FirmwareParts,
                          *, source: kernels.KernelSource,
                          archive: Callable[[], DebianArchive], dest: Path) -> None:
    """Two boots of `source`'s kernel: the import, then MokManager. `dest` is written
    only when MokManager enrolled every certificate."""
    password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="dtk-enrol-") as tmp:
        work = Path(tmp)
        store = copy_store(template, work / "vars.fd")
        with kernels.using_kernel(source, archive) as parts:
            require_signed(parts)
            esp = ensure_esp(firmware, parts.signed_image)
            initrd = _import_initrd(work, parts, ders, password, archive)
            payload = write_payload(work / "payload.img", initrd, qemu.kernel_cmdline())
            _import(chain.ChainSpec(firmware.code, store, esp, payload, work / "import.txt"),
                    work)
            _mokmanager(chain.ChainSpec(firmware.code, store, esp, None, work / "mm.txt"),
                        work, password)
        write_atomic(dest, store.read_bytes())


def _import_initrd(work: Path, parts: kernels.KernelParts, ders: tuple[bytes, ...],
                   password: str, archive: Callable[[], DebianArchive]) -> Path:
    # mokutil --hash-file takes a crypt(3) SHA-512 hash; the password goes to openssl on
    # its standard input, never on a command line
    hashed = runner.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                        timeout=30).stdout.strip()
    modules = kernels.module_set(parts, ["efivarfs"], [], archive)
    entries = [cpio.file("/init", scripts.text("guest-enrol.sh").encode(), 0o755),
               cpio.file("/dtk/enrol/password.hash", (hashed + "\n").encode(), 0o600),
               *(cpio.file(f"/dtk/enrol/key-{n}.der", der) for n, der in enumerate(ders))]
    arch = archive()
    layers = [tools.ensure_tools(arch), tools.ensure_mokutil(arch), *([modules] if modules else [])]
    return cpio.write_initrd(work / "import.cpio", layers, entries)


def _import(spec: chain.ChainSpec, work: Path) -> None:
    end = chain.boot(spec, timeout_s=_ENROL_TIMEOUT_S, console_log=work / "import.log")
    report = guest.parse_report(spec.result.read_text(errors="replace"))
    problem = secure_boot_problem(report.facts) if report.exit_code == 0 else \
        f"mokutil --import failed in the guest (status {report.exit_code}): " \
        f"{report.sections.get('import', '').strip() or end.stopped or end.reached}"
    if problem:
        raise DtkError(f"importing the MOK failed: {problem}",
                       hint=f"the console is kept in {_keep(work, 'import.log')}")
    if "MokNew" not in varstore.read_variables(spec.vars):
        raise DtkError("mokutil --import left no MokNew in the variable store",
                       hint=f"the console is kept in {_keep(work, 'import.log')}")


def _mokmanager(spec: chain.ChainSpec, work: Path, password: str) -> None:
    driver = MokManagerDriver(password)
    try:
        end = chain.boot(spec, timeout_s=_ENROL_TIMEOUT_S, console_log=work / "mm.log",
                         driver=driver.feed)
    except MokManagerError as exc:
        raise DtkError(f"MokManager: {exc}",
                       hint=f"the console is kept in {_keep(work, 'mm.log')}") from None
    if driver.stage is not Stage.DONE:
        raise DtkError(f"MokManager did not finish the enrolment: it stopped at "
                       f"{driver.stage.value} ({end.stopped or end.reached or 'qemu exited'})",
                       hint=f"the console is kept in {_keep(work, 'mm.log')}")


def _keep(work: Path, name: str) -> Path:
    logs = paths.state_dir() / "secure-boot" / time.strftime("enrol-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / name, logs / name)
    return logs / name
