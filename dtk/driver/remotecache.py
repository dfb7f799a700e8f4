"""A registry repository as the build cache every machine shares: `--cache REGISTRY/REPO`.

A cell's entry is the tag `REPO:<its input hash>`: the built image itself, or for a
DKMS cell whose failure dtk remembers (`matrix.remember`), a label-only record of
that failure, so that no other machine compiles it again. The rules that keep it
right, learnt from what BuildKit's and Bazel's remote-cache users ran into:

- an entry is written only after its cell is complete, and a registry makes a tag
  visible only once the whole manifest is there: a push killed halfway leaves no
  entry (and a reader never sees a partial one);
- the key is the input hash, which covers every input (sources, toolkit image,
  base, build args, dtk's recipe);
- a reader takes an entry only if its labels carry exactly that key (and kernel),
  then pulls it by the digest it looked at: an image pushed under the wrong key by
  hand, or a tag moved in between, is never used;
- a registry that is down, or refuses the credentials, costs one warning line and
  the run goes on building locally; the cache never decides an outcome.

The cache trusts what its writers labelled: who may push to REPO decides what
every reader runs, as with any registry.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dtk import kernel as kern
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import HASH_LABEL, KIND_LABEL, LABEL_PREFIX, Cell
from dtk.driver.sources import DkmsGroup
from dtk.engine import buildah, regcache, skopeo
from dtk.errors import DtkError
from dtk.toolkit.plan import ToolkitPlan

OUTCOME_LABEL = LABEL_PREFIX + "outcome"  # a failure record's verdict, as JSON
_STILL_S = 15.0  # how often a long store says it is still going
FAILURE_KIND = "failure"


def check_repo(repo: str) -> str:
    """REGISTRY/REPO, without tag or digest (dtk names each entry by its key)."""
    name = repo.removeprefix("docker://")
    last = name.rsplit("/", 1)[-1]
    if skopeo.registry_of(name) is None or "/" not in name or ":" in last or "@" in name:
        raise DtkError(f"--cache '{repo}' is not REGISTRY/REPOSITORY",
                       hint="e.g. --cache 127.0.0.1:5000/dtk-cache (each cell is tagged "
                            "with its input hash there)")
    return name


@dataclass
class RegistryCache:
    """The shared cache for one run; thread-safe (cells settle in parallel)."""

    repo: str
    warn: Callable[[str], None]  # a warning: the cache given up, an entry not used
    tls_verify: bool | None = None
    authfile: Path | None = None
    progress: Callable[[str], None] | None = None  # what a long store is doing, a line each
    detail: Callable[[str], None] | None = None  # a tool's progress, shown in place
    _off: set[str] = field(default_factory=set)  # "read", "write": given up for this run
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def _tls(self) -> bool:
        return regcache.tls_verify_for(self.repo, self.tls_verify)

    def ref(self, cell: Cell) -> str:
        return f"{self.repo}:{cell.input_hash.removeprefix('sha256:')}"

    def _give_up(self, what: str, exc: DtkError, then: str) -> None:
        """Stop using the cache for `what` ("read": anything) in this run; one warning
        per run, however many cells find it down, saying what happens `then` and how
        to fix it."""
        with self._lock:
            first_time = not self._off
            self._off.add(what)
        if first_time:
            self.warn(f"warning: cache {self.repo}: {exc.message.splitlines()[0]}; {then}"
                      + (f"\nhint: {exc.hint}" if exc.hint else ""))

    def _lookup(self, cell: Cell) -> regcache.Entry | None:
        if "read" in self._off or not cell.input_hash:
            return None
        try:
            return regcache.lookup(self.ref(cell), tls_verify=self._tls, authfile=self.authfile)
        except DtkError as exc:
            self._give_up("read", exc, "building locally")
            return None

    def fetch(self, cell: Cell, base: Outcome) -> Outcome | None:
        """The cell's outcome from the cache, or None: nothing there, the entry does
        not match the key (poisoned or stale: the cell is built), or no registry."""
        entry = self._lookup(cell)
        if entry is None or not self.matches(cell, entry):
            return None
        if entry.labels.get(KIND_LABEL) == FAILURE_KIND:
            return failure_from(cell, base, entry)
        try:
            if cell.push and skopeo.registry_of(cell.image) == skopeo.registry_of(self.repo):
                pushed = regcache.copy_within(self.repo, entry.digest, cell.image,
                                              tls_verify=self._tls, authfile=self.authfile)
                return replace(base, status=Status.BUILT, cached=True, shared=True,
                               pushed=pushed, modules=_modules(entry.labels))
            regcache.pull_by_digest(self.repo, entry.digest, cell.image,
                                    tls_verify=self._tls, authfile=self.authfile)
        except DtkError as exc:
            self._give_up("read", exc, "building locally")
            return None
        if buildah.labels(cell.image).get(HASH_LABEL) != cell.input_hash:
            return None  # cannot happen after a pull by digest; never trust it if it does
        return replace(base, status=Status.BUILT, image_id=buildah.image_id(cell.image),
                       cached=True, shared=True, modules=_modules(entry.labels))

    def matches(self, cell: Cell, entry: regcache.Entry) -> bool:
        """Whether an entry is what the cell's key promises; a mismatch is warned about."""
        labels = entry.labels
        kind = labels.get(KIND_LABEL)
        ok = (labels.get(HASH_LABEL) == cell.input_hash
              and labels.get(LABEL_PREFIX + "kernel") == cell.kernel
              and (kind == "driver" or (kind == FAILURE_KIND
                                        and isinstance(cell.source, DkmsGroup))))
        if not ok:
            self.warn(f"warning: cache entry {self.ref(cell)} ({entry.digest[:19]}) does not "
                      f"carry the labels of {cell.key}'s inputs: not used, building instead")
        return ok

    def publish(self, cell: Cell, outcome: Outcome, remembered: Outcome | None) -> None:
        """Store a complete cell: its image if built, its failure if dtk remembers it
        (`remembered`, a deterministic DKMS verdict). Anything else is not stored."""
        if self._off or not cell.input_hash:  # a registry that failed a read fails writes
            return
        if outcome.status is not Status.BUILT and (remembered is None
                                                   or remembered.reason != outcome.reason):
            return  # not a verdict on the inputs (a push failed, dtk broke)
        existing = self._lookup(cell)
        if existing is not None and existing.labels.get(HASH_LABEL) == cell.input_hash:
            return
        try:
            if outcome.status is Status.BUILT:
                self._push_verified(cell, cell.image)
            elif remembered is not None:
                self._push_failure(cell, remembered)
        except DtkError as exc:
            self._give_up("write", exc, "not storing results there")

    def _push_verified(self, cell: Cell, image: str) -> None:
        self._push_checked(image, self.ref(cell), HASH_LABEL, cell.input_hash)

    def _push_checked(self, image: str, ref: str, label: str, value: str,
                      on_line: Callable[[str], None] | None = None) -> str:
        """Push, then read the entry back: it must be what was pushed (its digest)."""
        digest = skopeo.push(image, ref, tls_verify=self._tls, authfile=self.authfile,
                             on_line=on_line)
        entry = regcache.lookup(ref, tls_verify=self._tls, authfile=self.authfile)
        if entry is None or entry.digest != digest or entry.labels.get(label) != value:
            raise DtkError(f"{ref} does not hold what was pushed ({digest[:19]})")
        return digest

    def take_input(self, local: str, name: str, label: str, value: str) -> None:
        """Pull the image a cell's key is computed from (a toolkit, the base) as `local`,
        if the cache has it with `label` = `value`: pulled by digest, its image id is
        the same on every machine, and so are the keys of the cells built on it."""
        if "read" in self._off:
            return
        ref = f"{self.repo}:{name}"
        try:
            entry = regcache.lookup(ref, tls_verify=self._tls, authfile=self.authfile)
            if entry is None:
                return
            if entry.labels.get(label) != value:
                self.warn(f"warning: cache entry {ref} is not {local} ({label} differs): "
                          "not used")
                return
            regcache.pull_by_digest(self.repo, entry.digest, local, tls_verify=self._tls,
                                    authfile=self.authfile)
        except DtkError as exc:
            self._give_up("read", exc, f"making {local} here")

    def store_input(self, local: str, name: str, label: str, value: str) -> None:
        """Push an input image made here, unless the cache has it already. A big one
        (a toolkit: 1-2 GB, a minute or more) says what it stores, shows skopeo's
        progress in place, and says when it is stored."""
        if self._off:
            return
        ref = f"{self.repo}:{name}"
        try:
            entry = regcache.lookup(ref, tls_verify=self._tls, authfile=self.authfile)
        except DtkError as exc:
            self._give_up("read", exc, f"not storing {local} there")
            return
        if entry is not None and entry.labels.get(label) == value:
            return
        size = buildah.image_size(local)
        self._say(f"storing {local} ({size / 1e6:.0f} MB) in the cache as {ref}")
        started = time.monotonic()
        done = threading.Event()

        def still() -> None:  # skopeo says nothing while a blob of a GB goes up
            while not done.wait(_STILL_S):
                self._say(f"  still storing {local} ({time.monotonic() - started:.0f}s)")
        threading.Thread(target=still, daemon=True).start()
        try:
            digest = self._push_checked(local, ref, label, value, on_line=self._progress)
        except DtkError as exc:
            self._give_up("write", exc, f"{local} is not stored there")
            return
        finally:
            done.set()
        self._say(f"stored {local} as {ref} ({digest[:19]}…) in "
                  f"{time.monotonic() - started:.0f}s")

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    def _progress(self, line: str) -> None:
        """skopeo's lines while it stores: each blob it starts (a toolkit has a few, of
        up to a GB) is a step of its own, also in a log; the rest is shown in place."""
        if line.startswith(("Copying blob", "Copying config", "Writing manifest")):
            self._say(f"  {line.strip()}")
        elif self.detail is not None:
            self.detail(line)

    def _push_failure(self, cell: Cell, failure: Outcome) -> None:
        local = f"localhost/dtk-cache-record:{cell.input_hash.removeprefix('sha256:')}"
        verdict = {"status": failure.status.value, "reason": failure.reason,
                   "tail": list(failure.tail), "notes": list(failure.notes)}
        regcache.record_image(local, {KIND_LABEL: FAILURE_KIND, HASH_LABEL: cell.input_hash,
                                      LABEL_PREFIX + "kernel": cell.kernel,
                                      OUTCOME_LABEL: regcache.encode(verdict)})
        try:
            self._push_verified(cell, local)
        finally:
            buildah.remove_image(local)


def toolkit_entry(plan: ToolkitPlan) -> tuple[str, str, str]:
    """(entry name, label, value) of a toolkit in the cache: keyed by its plan hash,
    as `dtk.toolkit.images.is_current` decides reuse locally."""
    return (f"toolkit-{kern.normalize(plan.release)}-{plan.plan_hash}", "dtk.plan",
            plan.plan_hash)


def base_entry(tag: str) -> tuple[str, str, str]:
    """The same for the base image, whose tag is a hash of its packages' versions."""
    return f"base-{tag.rsplit(':', 1)[-1]}", KIND_LABEL, "base"


def failure_from(cell: Cell, base: Outcome, entry: regcache.Entry) -> Outcome | None:
    """The remembered failure a record holds, or None if the record is unreadable."""
    try:
        data = json.loads(entry.labels[OUTCOME_LABEL])
        status = Status(data["status"])
        reason, tail, notes = str(data["reason"]), data["tail"], data["notes"]
    except (KeyError, ValueError, TypeError):
        return None
    if status is Status.BUILT:
        return None
    return replace(base, status=status, cached=True, shared=True, reason=reason,
                   tail=tuple(map(str, tail)), notes=tuple(map(str, notes)))


def _modules(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(m for m in labels.get(LABEL_PREFIX + "modules", "").split(",") if m)
