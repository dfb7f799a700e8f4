"""`dtk node`: driver containers on machines without Kubernetes.

From the kernel upgrade to the next boot, with no compiler, container engine
or daemon on the host:

* `layout`  — where declarations (/etc/dtk) and state (/var/lib/dtk) live;
* `declare` — `dtk node add|list|remove`: one KMM Module file per module;
* `oci`     — an image fetched with skopeo into an OCI layout, its layers
  verified and unpacked in Python into a content-addressed tree;
* `prepare` — per kernel: resolve, fetch, check against the host's own files
  for that kernel, and record a yes/no per module;
* `load`    — KMM's worker sequence from the prepared tree (the boot unit);
* `hooks`   — the kernel postinst/postrm hooks and the systemd unit.

`dtk.node` stands on `dtk.kmmapi` (the Module reader and resolver it shares
with `dtk.kmm`), beside the other workflows.
"""
