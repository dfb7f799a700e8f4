"""`dtk inspect | check | sign | verify | keygen`: kernel modules, before any boot."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import click
from cryptography import x509

from dtk import kernel as kern
from dtk.cli.common import json_option, print_json, print_table, registry_options, say
from dtk.engine import skopeo
from dtk.errors import DtkError
from dtk.kernel import facts, keyring, modfile
from dtk.kmod import check as chk
from dtk.kmod import elf, image, keygen, sign
from dtk.kmod.image import Loaded
from dtk.kmod.targets import check_target
from dtk.toolkit import locate


def _is_file(target: str) -> bool:
    return Path(target).is_file() or modfile.is_module(target)


def _not_a_directory(target: str) -> None:
    if Path(target).is_dir():
        raise DtkError(f"{target} is a directory, not a module file or an image",
                       hint="give a .ko file (or .ko.xz/.zst/.gz) or an image name; for a "
                            "directory of modules, list the files")


def load_target(target: str, cert_path: Path | None = None, *, tls_verify: bool | None = None,
                authfile: Path | None = None) -> image.ImageModules | Loaded:
    """A module file, or an image's modules grouped by kernel directory (an image only
    in a registry is pulled into local storage first)."""
    _not_a_directory(target)
    cert = keyring.load_cert(cert_path) if cert_path else None
    if _is_file(target):
        return image.load_file(Path(target), cert)
    skopeo.ensure_local(target, tls_verify=tls_verify, authfile=authfile)
    return image.read_image_index(target, cert=cert)


def _groups(loaded: image.ImageModules | Loaded) -> dict[str, list[Loaded]]:
    return {"": [loaded]} if isinstance(loaded, Loaded) else loaded.modules


# --- inspect ----------------------------------------------------------------------

def _describe(mod: elf.KernelModule, symbols: bool) -> None:
    say(f"{mod.path}")
    for key, value in mod.modinfo:  # every field, in file order, as modinfo prints them
        say(f"  {key + ':':12} {value}")
    say(f"  {'machine:':12} {mod.machine}" +
               (f" ({mod.compression}-compressed)" if mod.compression else ""))
    say(f"  {'imports:':12} {len(mod.versions)} with CRCs, {len(mod.undefined)} undefined")
    gpl = sum(e.gpl_only for e in mod.exports)
    say(f"  {'exports:':12} {len(mod.exports)} ({gpl} GPL-only)")
    sig = mod.signature
    if sig is None:
        say(f"  {'signature:':12} none")
    else:
        say(f"  {'signer:':12} {sig.signer.issuer_cn or '-'}")
        say(f"  {'sig_key:':12} {elf.colon_hex(sig.signer.key_id)}")
        say(f"  {'sig_hash:':12} {sig.hash_algo} ({sig.sig_algo}, {sig.id_type})")
    if symbols:
        for name, crc in mod.versions:
            say(f"  import 0x{crc:08x} {name}")
        for exp in mod.exports:
            kind = "EXPORT_SYMBOL_GPL" if exp.gpl_only else "EXPORT_SYMBOL"
            say(f"  export {kind} {exp.name}" +
                       (f" [{exp.namespace}]" if exp.namespace else ""))


@click.command("inspect")
@click.argument("targets", nargs=-1, required=True)
@click.option("--symbols", is_flag=True, help="List every imported and exported symbol.")
@json_option
def inspect_cmd(targets: tuple[str, ...], symbols: bool, as_json: bool) -> None:
    """Show what module files (.ko, .ko.xz, …) or every module in images contain."""
    found = [(t, _groups(load_target(t))) for t in targets]
    if as_json:
        print_json([{"target": t, "kernel_dir": k or None, **item.module.to_json()}
                    for t, groups in found for k, items in groups.items() for item in items])
        return
    for _target, groups in found:
        for items in groups.values():
            for item in items:
                _describe(item.module, symbols)


# --- check --------------------------------------------------------------------------

def _kernel_facts(release: str, kernel_root: Path | None, download: bool
                  ) -> facts.KernelFacts:
    if kernel_root is not None:
        return facts.for_directory(kernel_root, release)
    return locate.kernel_facts(release, download=download)


_SHOWN_PER_CODE = 5  # a module built for another ABI fails hundreds of CRCs; --json has all


def _print_verdict(verdict: chk.Prediction) -> None:
    say(f"{verdict.path} on {verdict.kernel}: {verdict.verdict.value} (predicted)")
    shown: collections.Counter[str] = collections.Counter()
    for finding in verdict.findings:
        if finding.severity is chk.Severity.OK and not verdict.loads:
            continue
        shown[finding.code] += 1
        if shown[finding.code] <= _SHOWN_PER_CODE:
            say(f"  {finding.severity.value:7} {finding.code:16} {finding.message}",
                indent=" " * 25)
    for code, count in shown.items():
        if count > _SHOWN_PER_CODE:
            say(f"  {'':7} {code:16} … and {count - _SHOWN_PER_CODE} more (--json "
                       "lists every finding)")
    for line in chk.remedies(verdict):
        say(f"  fix: {line}", indent="     ")


def _cell(verdicts: list[chk.Prediction]) -> str:
    refused = [v for v in verdicts if not v.loads]
    if not refused:
        tainted = any(f.severity is chk.Severity.TAINT for v in verdicts for f in v.findings)
        return "loaded (taints)" if tainted else "loaded"
    codes = sorted({f.code for v in refused for f in v.refusals})
    return "refused: " + ",".join(codes)


@click.command("check")
@click.argument("targets", nargs=-1, required=True)
@click.option("--kernel", "kernels", multiple=True, required=True, metavar="RELEASE",
              help="Kernel release to check against (repeatable: a matrix).")
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Certificate the node trusts (enrolled MOK); checks the signature.")
@click.option("--secure-boot", is_flag=True,
              help="The node boots with Secure Boot, so lockdown enforces signatures.")
@click.option("--sig-enforce", is_flag=True,
              help="The node boots with module.sig_enforce=1 (what dtk vmtest --sig-enforce "
                   "does).")
@click.option("--kernel-root", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Read kernels from this root (e.g. /) instead of their toolkit images.")
@click.option("--download/--no-download", default=True, show_default=True,
              help="For a kernel without a toolkit, fetch its headers package (~2 MB).")
@registry_options
@json_option
def check_cmd(*, targets: tuple[str, ...], kernels: tuple[str, ...], cert: Path | None,
               secure_boot: bool, sig_enforce: bool, kernel_root: Path | None, download: bool,
               tls_verify: bool | None, authfile: Path | None, as_json: bool) -> None:
    """Predict whether each kernel loads each module, and why not. Exit 1 if any is refused.

    TARGETS are module files or images; several targets or kernels print a matrix.
    """
    for release in kernels:
        kern.parse(release)
    loaded = {t: load_target(t, cert, tls_verify=tls_verify, authfile=authfile)
              for t in targets}
    kernel_facts = [_kernel_facts(k, kernel_root, download) for k in kernels]
    policy = chk.Policy(secure_boot=secure_boot, sig_enforce=sig_enforce)
    results = {(t, k.release): check_target(loaded[t], k, policy)
               for t in targets for k in kernel_facts}
    refused = any(not v.loads for verdicts in results.values() for v in verdicts)
    sources = {k.release: {"source": k.source, "image": k.image or None,
                           "image_id": k.image_id or None} for k in kernel_facts}
    if as_json:
        print_json([v.to_json() | {"target": t, "kernel_facts": sources[k]}
                    for (t, k), vs in results.items() for v in vs])
    elif len(targets) == 1 and len(kernels) == 1:
        say(f"kernel facts: {kernel_facts[0].source}")
        for verdict in next(iter(results.values())):
            _print_verdict(verdict)
    else:
        print_table(["TARGET", *kernels],
                    [[t, *(_cell(results[(t, k)]) for k in kernels)] for t in targets])
    sys.exit(1 if refused else 0)


# --- sign / verify / keygen ----------------------------------------------------------------

@click.command("sign")
@click.argument("module", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--unsigned-image", metavar="IMAGE",
              help="Sign the modules of this image instead (KMM's sign.unsignedImage).")
@click.option("--key", "key_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Private key, PEM (read into memory only; never copied anywhere).")
@click.option("--cert", "cert_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The key's X.509 certificate, PEM or DER.")
@click.option("--hash", "hash_algo", default="sha256", show_default=True, metavar="DIGEST",
              help=f"One of {', '.join(sign.HASHES)} (md5 and sha1 are refused).")
@click.option("--key-id", "use_key_id", is_flag=True,
              help="Name the signer by subject key id (sign-file -k), not issuer+serial.")
@click.option("--output", "-o", help="MODULE: write here instead of in place. "
                                     "--unsigned-image: name of the signed image (required).")
@click.option("--kernel", help="Image: kernel release for $KERNEL_FULL_VERSION in the globs.")
@click.option("--files-to-sign", "patterns", multiple=True, metavar="GLOB",
              help="Image: KMM filesToSign entry (repeatable); each must match a module.")
@registry_options
@json_option
def sign_cmd(*, module: Path | None, unsigned_image: str | None, key_path: Path,
             cert_path: Path, hash_algo: str, use_key_id: bool, output: str | None,
             kernel: str | None, patterns: tuple[str, ...], tls_verify: bool | None,
             authfile: Path | None, as_json: bool) -> None:
    """Sign MODULE (.ko, .ko.xz, …) like the kernel's sign-file, or every module of
    --unsigned-image matching --files-to-sign into a new image, like KMM's sign."""
    if (module is None) == (unsigned_image is None):
        raise DtkError("give either a MODULE file or --unsigned-image IMAGE")
    if unsigned_image is not None and (not output or not kernel or not patterns):
        raise DtkError("signing an image needs --output NEW-IMAGE, --kernel RELEASE and "
                       "--files-to-sign GLOB",
                       hint="e.g. dtk sign --unsigned-image IMG:unsigned --kernel "
                            "6.1.0-56-amd64 --output IMG:signed --files-to-sign "
                            "'/opt/lib/modules/$KERNEL_FULL_VERSION/*.ko' --key key.pem "
                            "--cert cert.pem")
    if module is not None and output is not None and Path(output).is_dir():
        raise DtkError(f"-o {output} is a directory", hint="give the signed module's file "
                                                           f"name, e.g. -o {output}/{module.name}")
    signer = sign.make_signer(key_path, cert_path, hash_algo, use_key_id)  # fail early
    if module is not None:
        replaced = sign.sign_file(module, signer, Path(output) if output else None)
        if as_json:
            print_json({"signed": str(output or module), "hash": hash_algo,
                        "replaced_signature": replaced})
            return
        note = " (replaced its previous signature)" if replaced else ""
        say(f"signed {output or module} with {hash_algo}{note}")
        _old_kernels_note(hash_algo)
        return
    assert unsigned_image is not None and output is not None and kernel is not None
    kern.parse(kernel)
    skopeo.ensure_local(unsigned_image, tls_verify=tls_verify, authfile=authfile)
    result = image.sign_image(unsigned_image, output, list(patterns), kernel, signer=signer,
                              on_file=None if as_json else lambda p: say(f"signed {p}"))
    if as_json:
        print_json({"image": result.name, "image_id": result.image_id, "hash": hash_algo,
                    "files": list(result.files)})
        return
    say(f"{result.name} ({result.image_id[:12]}): {len(result.files)} module(s) signed")
    _old_kernels_note(hash_algo)


def _old_kernels_note(hash_algo: str) -> None:
    if hash_algo in sign.OLD_KERNELS_REFUSE:
        say(f"note: kernels before 6.7 (Debian 12's 6.1) refuse {hash_algo} signatures "
                   "(unsupported crypto); dtk check --kernel K says for yours")


@click.command("verify")
@click.argument("target")
@click.option("--cert", "cert_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Certificate to verify against (PEM or DER).")
@json_option
def verify_cmd(target: str, cert_path: Path, as_json: bool) -> None:
    """Check module signatures against a certificate. Exit 1 if any does not verify."""
    _not_a_directory(target)
    cert = keyring.load_cert(cert_path)
    rows = []
    if _is_file(target):
        elf.read_module(Path(target))  # a corrupt module says so, as inspect and check do
        rows.append((target, sign.verify_file(Path(target), cert)))
    else:
        for items in image.read_modules(target, cert=cert).values():
            rows += [(item.module.path, _verdict(item, cert)) for item in items]
    if as_json:
        print_json([{"path": p, "ok": r.ok, "reason": r.reason} for p, r in rows])
    else:
        print_table(["MODULE", "VERIFIED", "DETAIL"],
                    [[p, "yes" if r.ok else "NO", r.reason] for p, r in rows])
    sys.exit(0 if all(r.ok for _p, r in rows) else 1)


def _verdict(item: image.Loaded, cert: x509.Certificate) -> sign.VerifyResult:
    """An image's module in the words a file gets (verify_bytes): the same check, on
    the digest kept when the image was read."""
    sig = item.module.signature
    if sig is None:
        return sign.VerifyResult(False, "unsigned")
    if item.digest is None:
        return sign.VerifyResult(False, f"unsupported hash {sig.hash_algo}")
    return sign.verify_digest(sig, item.digest, cert)


@click.command("keygen")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where to write the key and cert (default: dtk's state "
                                 "directory, ~/.local/state/dtk/keys, mode 0700).")
@click.option("--cn", "common_name", default="dtk module signing key", show_default=True,
              help="Common name (what modinfo shows as signer).")
@click.option("--bits", default=2048, show_default=True, type=click.IntRange(2048, 4096),
              help="RSA key size.")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500),
              help="Days the certificate is valid.")
@click.option("--force", is_flag=True,
              help="Overwrite existing files, or write inside a git work tree.")
@json_option
def keygen_cmd(*, directory: Path | None, common_name: str, bits: int, days: int, force: bool,
               as_json: bool) -> None:
    """Make a module-signing key and a certificate fit for MOK enrolment."""
    files = keygen.keygen(directory or keygen.default_dir(), common_name, bits=bits,
                          days=days, force=force)
    if as_json:
        print_json({"key": str(files.key), "cert_pem": str(files.cert_pem),
                    "cert_der": str(files.cert_der),
                    "enrol": f"mokutil --import {files.cert_der}"})
        return
    say(f"private key:  {files.key}  (mode 0600; keep it out of images and git)")
    say(f"certificate:  {files.cert_pem}  and  {files.cert_der}")
    say("enrol it on each Secure Boot node, then reboot and confirm in MokManager:")
    say(f"  mokutil --import {files.cert_der}")


def register(group: click.Group) -> None:
    for command in (inspect_cmd, check_cmd, sign_cmd, verify_cmd, keygen_cmd):
        group.add_command(command)
