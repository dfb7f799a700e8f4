"""Module `spec` (decoded YAML) into the model, with the CRD's types and field names."""

from __future__ import annotations

from typing import Any

from dtk.kmmapi import model as m
from dtk.kmmapi.reader import Reader, child

_TLS = ["insecure", "insecureSkipTLSVerify"]
_BUILD = ["buildArgs", "dockerfileConfigMap", "baseImageRegistryTLS", "secrets",
          "kanikoParams", "selector"]
_SIGN = ["unsignedImage", "unsignedImageRegistryTLS", "keySecret", "certSecret", "filesToSign"]
_MAPPING = ["literal", "regexp", "containerImage", "build", "sign", "registryTLS",
            "inTreeModuleToRemove", "inTreeModulesToRemove"]
_MODPROBE = ["moduleName", "parameters", "dirName", "args", "rawArgs", "firmwarePath",
             "modulesLoadingOrder"]
_CONTAINER = ["modprobe", "version", "containerImage", "imagePullPolicy", "build", "sign",
              "registryTLS", "inTreeModuleToRemove", "inTreeModulesToRemove", "kernelMappings"]
_SPEC = ["moduleLoader", "devicePlugin", "dra", "imageRepoSecret", "selector", "tolerations",
         "imageRebuildTriggerGeneration"]
_PLUGIN = ["container", "initContainer", "serviceAccountName", "volumes",
           "automountServiceAccountToken"]
_DRA = [*_PLUGIN, "driverName", "deviceClasses"]
_PLUGIN_CONTAINER = ["image", "command", "args", "env", "imagePullPolicy", "resources",
                     "volumeMounts"]
_TOLERATION = ["key", "operator", "value", "effect", "tolerationSeconds"]


def tls(r: Reader, value: Any, path: str) -> m.TLSOptions | None:
    if value is None:
        return None
    body = r.obj(value, path, _TLS)
    return m.TLSOptions(r.boolean(body.get("insecure"), child(path, "insecure")),
                        r.boolean(body.get("insecureSkipTLSVerify"),
                                  child(path, "insecureSkipTLSVerify")))


def build(r: Reader, value: Any, path: str) -> m.Build | None:
    if value is None:
        return None
    body = r.obj(value, path, _BUILD, ["dockerfileConfigMap"])
    args = []
    for arg_path, item in r.items(body.get("buildArgs"), child(path, "buildArgs")):
        arg = r.obj(item, arg_path, ["name", "value"], ["name", "value"])  # both, per the CRD
        args.append(m.BuildArg(r.string(arg.get("name"), child(arg_path, "name")),
                               r.string(arg.get("value"), child(arg_path, "value"))))
    secrets = []
    for secret_path, item in r.items(body.get("secrets"), child(path, "secrets")):
        secrets.append(r.ref(item, secret_path) or "")
    kaniko = body.get("kanikoParams")
    kaniko_tag = None
    if kaniko is not None:
        kbody = r.obj(kaniko, child(path, "kanikoParams"), ["tag"])
        kaniko_tag = r.string(kbody.get("tag"), child(path, "kanikoParams.tag")) or None
    return m.Build(
        dockerfile_configmap=r.ref(body.get("dockerfileConfigMap"),
                                   child(path, "dockerfileConfigMap")) or "",
        build_args=tuple(args),
        base_image_registry_tls=tls(r, body.get("baseImageRegistryTLS"),
                                    child(path, "baseImageRegistryTLS")),
        secrets=tuple(secrets),
        kaniko_tag=kaniko_tag,
        selector=r.string_map(body.get("selector"), child(path, "selector")),
    )


def sign(r: Reader, value: Any, path: str) -> m.Sign | None:
    if value is None:
        return None
    body = r.obj(value, path, _SIGN, ["keySecret", "certSecret"])
    return m.Sign(
        key_secret=r.ref(body.get("keySecret"), child(path, "keySecret")) or "",
        cert_secret=r.ref(body.get("certSecret"), child(path, "certSecret")) or "",
        unsigned_image=r.string(body.get("unsignedImage"), child(path, "unsignedImage")),
        unsigned_image_registry_tls=tls(r, body.get("unsignedImageRegistryTLS"),
                                        child(path, "unsignedImageRegistryTLS")),
        files_to_sign=r.strings(body.get("filesToSign"), child(path, "filesToSign")) or (),
    )


def mapping(r: Reader, value: Any, path: str) -> m.KernelMapping:
    # The CRD lists containerImage as required (its json tag has no omitempty): the key
    # must be there, though "" is admitted when the container sets a default image.
    body = r.obj(value, path, _MAPPING, ["containerImage"])
    return m.KernelMapping(
        literal=r.string(body.get("literal"), child(path, "literal")),
        regexp=r.string(body.get("regexp"), child(path, "regexp")),
        container_image=r.string(body.get("containerImage"), child(path, "containerImage")),
        build=build(r, body.get("build"), child(path, "build")),
        sign=sign(r, body.get("sign"), child(path, "sign")),
        registry_tls=tls(r, body.get("registryTLS"), child(path, "registryTLS")),
        in_tree_module_to_remove=r.string(body.get("inTreeModuleToRemove"),
                                          child(path, "inTreeModuleToRemove")),
        in_tree_modules_to_remove=r.strings(body.get("inTreeModulesToRemove"),
                                            child(path, "inTreeModulesToRemove")),
    )


def modprobe_args(r: Reader, value: Any, path: str) -> m.ModprobeArgs | None:
    if value is None:
        return None
    body = r.obj(value, path, ["load", "unload"])
    return m.ModprobeArgs(r.strings(body.get("load"), child(path, "load")),
                          r.strings(body.get("unload"), child(path, "unload")))


def modprobe(r: Reader, value: Any, path: str) -> m.Modprobe:
    body = r.obj(value, path, _MODPROBE)
    return m.Modprobe(
        module_name=r.string(body.get("moduleName"), child(path, "moduleName")),
        parameters=r.strings(body.get("parameters"), child(path, "parameters")) or (),
        # The CRD defaults an absent (or empty, since omitempty drops it) dirName to /opt.
        dir_name=r.string(body.get("dirName"), child(path, "dirName")) or m.DEFAULT_DIR_NAME,
        args=modprobe_args(r, body.get("args"), child(path, "args")),
        raw_args=modprobe_args(r, body.get("rawArgs"), child(path, "rawArgs")),
        firmware_path=r.string(body.get("firmwarePath"), child(path, "firmwarePath")),
        modules_loading_order=r.strings(body.get("modulesLoadingOrder"),
                                        child(path, "modulesLoadingOrder")),
    )


def container(r: Reader, value: Any, path: str) -> m.Container:
    body = r.obj(value, path, _CONTAINER, ["modprobe"])
    raw_mappings = body.get("kernelMappings")
    mappings = None
    if raw_mappings is not None:
        mappings = tuple(mapping(r, item, item_path) for item_path, item
                         in r.items(raw_mappings, child(path, "kernelMappings")))
    return m.Container(
        modprobe=modprobe(r, body.get("modprobe", {}), child(path, "modprobe")),
        kernel_mappings=mappings,
        version=r.string(body.get("version"), child(path, "version")),
        container_image=r.string(body.get("containerImage"), child(path, "containerImage")),
        # A plain string in the CRD, unchecked by KMM's webhook: `validate` warns.
        image_pull_policy=r.string(body.get("imagePullPolicy"), child(path, "imagePullPolicy")),
        build=build(r, body.get("build"), child(path, "build")),
        sign=sign(r, body.get("sign"), child(path, "sign")),
        registry_tls=tls(r, body.get("registryTLS"), child(path, "registryTLS")),
        in_tree_module_to_remove=r.string(body.get("inTreeModuleToRemove"),
                                          child(path, "inTreeModuleToRemove")),
        in_tree_modules_to_remove=r.strings(body.get("inTreeModulesToRemove"),
                                            child(path, "inTreeModulesToRemove")),
    )


def tolerations(r: Reader, value: Any, path: str) -> tuple[m.Toleration, ...]:
    out = []
    for item_path, item in r.items(value, path):
        body = r.obj(item, item_path, _TOLERATION)
        out.append(m.Toleration(
            key=r.string(body.get("key"), child(item_path, "key")),
            operator=r.string(body.get("operator"), child(item_path, "operator")),
            value=r.string(body.get("value"), child(item_path, "value")),
            effect=r.string(body.get("effect"), child(item_path, "effect")),
            toleration_seconds=r.integer(body.get("tolerationSeconds"),
                                         child(item_path, "tolerationSeconds")),
        ))
    return tuple(out)


def passthrough(r: Reader, value: Any, path: str, allowed: list[str],
                required: list[str]) -> dict[str, Any] | None:
    """devicePlugin/dra: top-level keys and the containers' keys are checked, the rest kept
    (dtk runs neither; KMM's webhook reads only the volumes and DRA's names)."""
    if value is None:
        return None
    body = r.obj(value, path, allowed, required)
    for key in ("container", "initContainer"):
        if body.get(key) is not None:
            required = ["image"] if key == "container" else []
            r.obj(body[key], child(path, key), _PLUGIN_CONTAINER, required)
    if body.get("serviceAccountName") is not None:
        r.string(body["serviceAccountName"], child(path, "serviceAccountName"))
    r.items(body.get("volumes"), child(path, "volumes"))
    if body.get("automountServiceAccountToken") is not None:
        r.boolean(body["automountServiceAccountToken"],
                  child(path, "automountServiceAccountToken"))
    for item_path, item in r.items(body.get("deviceClasses"), child(path, "deviceClasses")):
        r.obj(item, item_path, ["name", "selectors", "config"], ["name"])
    return dict(body)


def spec(r: Reader, value: Any, path: str = "spec") -> dict[str, Any]:
    """The spec's parsed fields, as keyword arguments for `model.Module`."""
    body = r.obj(value, path, _SPEC)
    loader = None
    if body.get("moduleLoader") is not None:
        lpath = child(path, "moduleLoader")
        lbody = r.obj(body["moduleLoader"], lpath, ["container", "serviceAccountName"],
                      ["container"])
        # A missing container is one error (reported by obj above), not its fields too.
        cont = container(r, lbody["container"], child(lpath, "container")) \
            if lbody.get("container") is not None else m.Container(m.Modprobe(), None)
        loader = m.ModuleLoader(
            cont, r.string(lbody.get("serviceAccountName"), child(lpath, "serviceAccountName")))
    return {
        "selector": r.string_map(body.get("selector"), child(path, "selector")),
        "module_loader": loader,
        "device_plugin": passthrough(r, body.get("devicePlugin"), child(path, "devicePlugin"),
                                     _PLUGIN, ["container"]),
        "dra": passthrough(r, body.get("dra"), child(path, "dra"), _DRA,
                           ["container", "driverName"]),
        "image_repo_secret": r.ref(body.get("imageRepoSecret"), child(path, "imageRepoSecret")),
        "tolerations": tolerations(r, body.get("tolerations"), child(path, "tolerations")),
        "image_rebuild_trigger_generation": r.integer(
            body.get("imageRebuildTriggerGeneration"),
            child(path, "imageRebuildTriggerGeneration")),
    }
