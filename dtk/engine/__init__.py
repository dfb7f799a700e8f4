"""Typed wrappers over buildah and skopeo. Nothing else in dtk calls those CLIs.

May import: dtk.kernel and dtk's base (run, errors).
"""
