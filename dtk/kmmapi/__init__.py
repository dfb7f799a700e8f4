"""KMM's Module API, read the way the cluster reads it (pure: no tool runs here).

* `model`    — frozen dataclasses for Module, ConfigMap and Secret documents;
* `reader`, `spec` — strict field readers that name the field path;
* `load`     — manifests (files, directories, multi-document YAML) into a `Bundle`,
  strictly: unknown fields, wrong types and dangling references are errors
  naming the field path, as the API server and webhook would name them;
* `validate` — KMM's admission rules (webhook and CRD schema);
* `merge`    — how a kernelMapping's build and sign combine with the container's;
* `plan`     — which kernelMapping each kernel takes, its resolved image and
  merged build/sign specs and the build args KMM injects;
* `authfile` — the imageRepoSecret as a 0600 file for the container tools.

Both workflows that take Modules stand on it: `dtk.kmm` (build, sign, preflight,
render for a cluster) and `dtk.node` (a host without Kubernetes). It imports
only `dtk.kernel` and the base.
"""
