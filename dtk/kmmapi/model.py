"""Typed, frozen model of the documents `dtk module` reads.

Field names follow `api/v1beta1/module_types.go` in snake case. Optional
pointers in Go (`*Build`, `*Sign`, `*TLSOptions`) are `None` here when absent,
because KMM's merge rules distinguish "not set" from "set to the default"
(a mapping's `registryTLS: {}` still overrides the container's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dtk.errors import DtkError

API_VERSION = "kmm.sigs.x-k8s.io/v1beta1"
DEFAULT_DIR_NAME = "/opt"
DOCKERFILE_KEY = "dockerfile"  # the ConfigMap key KMM reads (constants.DockerfileCMKey)
KEY_KEY = "key"  # sign keySecret's key (constants.PrivateSignDataKey)
CERT_KEY = "cert"  # sign certSecret's key (constants.PublicSignDataKey)
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"


@dataclass(frozen=True)
class Source:
    """Where a document came from, for messages: 'mods.yaml (document 2)'."""

    file: str
    index: int
    item: int | None = None  # within a `kind: List` document

    def __str__(self) -> str:
        where = f"{self.file} (document {self.index + 1}"
        return where + (f", items[{self.item}])" if self.item is not None else ")")


@dataclass(frozen=True)
class TLSOptions:
    insecure: bool = False
    insecure_skip_tls_verify: bool = False

    @property
    def verify(self) -> bool:
        """Whether a client should verify TLS (skopeo's --tls-verify)."""
        return not (self.insecure or self.insecure_skip_tls_verify)

    @property
    def tls_verify(self) -> bool | None:
        """For dtk's registry calls: False when the Module turns verification off, else
        None, dtk's one rule (verify, except for a loopback registry)."""
        return None if self.verify else False


@dataclass(frozen=True)
class BuildArg:
    name: str
    value: str


@dataclass(frozen=True)
class Build:
    dockerfile_configmap: str
    build_args: tuple[BuildArg, ...] = ()
    base_image_registry_tls: TLSOptions | None = None
    secrets: tuple[str, ...] = ()
    kaniko_tag: str | None = None
    selector: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Sign:
    key_secret: str
    cert_secret: str
    unsigned_image: str = ""
    unsigned_image_registry_tls: TLSOptions | None = None
    files_to_sign: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelMapping:
    literal: str = ""
    regexp: str = ""
    container_image: str = ""
    build: Build | None = None
    sign: Sign | None = None
    registry_tls: TLSOptions | None = None
    in_tree_module_to_remove: str = ""  # deprecated single form
    in_tree_modules_to_remove: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModprobeArgs:
    load: tuple[str, ...] | None = None
    unload: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Modprobe:
    module_name: str = ""
    parameters: tuple[str, ...] = ()
    dir_name: str = DEFAULT_DIR_NAME
    args: ModprobeArgs | None = None
    raw_args: ModprobeArgs | None = None
    firmware_path: str = ""
    modules_loading_order: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Container:
    modprobe: Modprobe
    kernel_mappings: tuple[KernelMapping, ...] | None
    version: str = ""
    container_image: str = ""
    image_pull_policy: str = ""
    build: Build | None = None
    sign: Sign | None = None
    registry_tls: TLSOptions | None = None
    in_tree_module_to_remove: str = ""
    in_tree_modules_to_remove: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModuleLoader:
    container: Container
    service_account_name: str = ""


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


@dataclass(frozen=True)
class Module:
    name: str
    namespace: str
    source: Source
    selector: Mapping[str, str] | None
    module_loader: ModuleLoader | None = None
    # devicePlugin and dra are passed through: dtk does not run them, so only
    # their top-level keys are checked (and the DRA hostPath rule).
    device_plugin: Mapping[str, Any] | None = None
    dra: Mapping[str, Any] | None = None
    image_repo_secret: str | None = None
    tolerations: tuple[Toleration, ...] = ()
    image_rebuild_trigger_generation: int | None = None
    # The document as given, so that `render` changes only what it must.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


MIC_KIND = "ModuleImagesConfig"
MBSC_KIND = "ModuleBuildSignConfig"
BUILD_IMAGE, SIGN_IMAGE = "BuildImage", "SignImage"  # an MBSC image's action


@dataclass(frozen=True)
class ImageSpec:
    """One image of a ModuleImagesConfig or ModuleBuildSignConfig (ModuleImageSpec):
    what KMM's operator derived from the Module for one kernel, variables substituted."""

    image: str
    kernel_version: str
    build: Build | None = None
    sign: Sign | None = None
    skip_wait_missing_image: bool = False
    registry_tls: TLSOptions | None = None
    dir_name: str = DEFAULT_DIR_NAME
    action: str = ""  # an MBSC's BuildImage or SignImage; "" in a MIC


@dataclass(frozen=True)
class ImagesConfig:
    """A ModuleImagesConfig (`kind` MIC_KIND) or ModuleBuildSignConfig (MBSC_KIND): KMM's
    internal objects between a Module and its builds, named after the Module."""

    kind: str
    name: str
    namespace: str
    source: Source
    images: tuple[ImageSpec, ...]
    image_repo_secret: str | None = None
    image_pull_policy: str = "IfNotPresent"  # the MIC CRD's default when absent
    push_built_image: bool = False
    image_rebuild_trigger_generation: int | None = None
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True)
class ConfigMap:
    name: str
    namespace: str
    source: Source
    data: Mapping[str, str]
    binary_data: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Secret:
    """A Secret; its values never appear in repr, messages or logs."""

    name: str
    namespace: str
    source: Source
    type: str
    data: Mapping[str, bytes] = field(repr=False)

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.data))
        return (f"Secret(name={self.name!r}, namespace={self.namespace!r}, type={self.type!r}, "
                f"keys=[{keys}], values=<redacted>)")

    __str__ = __repr__


@dataclass(frozen=True)
class Bundle:
    """Everything given with -f, keyed by (namespace, name)."""

    modules: tuple[Module, ...]
    configmaps: Mapping[tuple[str, str], ConfigMap]
    secrets: Mapping[tuple[str, str], Secret] = field(repr=False)
    skipped: tuple[str, ...] = ()  # documents left out, and why (other kinds, empty files)
    images_configs: tuple[ImagesConfig, ...] = ()  # ModuleImagesConfigs and MBSCs

    def configmap(self, namespace: str, name: str) -> ConfigMap | None:
        return self.configmaps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> Secret | None:
        return self.secrets.get((namespace, name))

    def module(self, name: str | None) -> Module:
        """The one Module to act on; `name` picks one when several were given."""
        chosen = [m for m in self.modules if name is None or m.name == name]
        if not chosen:
            given = ", ".join(f"{m.namespace}/{m.name}" for m in self.modules) or "none"
            raise DtkError(f"no Module {name!r} among the documents given (given: {given})"
                           if name else "no Module among the documents given",
                           hint="pass the Module's manifest with -f")
        if len(chosen) > 1:
            raise DtkError("several Modules given: " + ", ".join(
                f"{m.namespace}/{m.name}" for m in chosen), hint="pick one with --module NAME")
        return chosen[0]
