"""Check a loaded target (a module file or an image's modules) against one kernel:
the one place the CLI's `dtk check` and the demo share."""

from __future__ import annotations

from dtk import kernel as kern
from dtk.errors import DtkError
from dtk.kernel import facts, keyring
from dtk.kmod import check as chk
from dtk.kmod import image
from dtk.kmod.image import Loaded


def kernel_dir_for(groups: dict[str, list[Loaded]], release: str) -> str | None:
    """The image's kernel directory to check against `release`.

    Its own directory for that kernel (raw or normalized) when there is one;
    otherwise, with a single kernel directory, that one (the question is then
    "does what I built for K1 load on K2?"); otherwise none.
    """
    for key in (release, kern.normalize(release)):
        if key in groups:
            return key
    return next(iter(groups)) if len(groups) == 1 else None


def check_target(target: image.ImageModules | Loaded, kernel: facts.KernelFacts,
                 policy: chk.Policy) -> list[chk.Prediction]:
    builtin = keyring.load(kernel.builtin_certs)
    if isinstance(target, Loaded):
        return [chk.check_module(target.module, kernel, {}, trust=target.trust_on(builtin),
                                 policy=policy)]
    key = kernel_dir_for(target.modules, kernel.release)
    if key is None:
        raise DtkError(f"the image has modules for {', '.join(target.modules)} but not for "
                       f"{kernel.release}", hint="check it against one of those kernels")
    items = target.modules[key]
    peers, names = chk.peers_of([i.module for i in items])
    return [chk.check_module(i.module, kernel, peers, peer_modules=names,
                             trust=i.trust_on(builtin), policy=policy,
                             depmod=target.depmod[key]) for i in items]
