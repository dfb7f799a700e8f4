"""Toolkit images: one per kernel release, with its RT sibling, exact compiler and tools.

Owns: the pure plan (`plan`), building and reusing the images (`images`),
reading them (`query`), and the answer to "where are kernel K's files on this
machine" (`locate`: K's toolkit, or its standard sibling's, or for a kernel
without one its headers package, `headers`).

May import: dtk.distro, dtk.engine, dtk.kernel and dtk's base. The features
(driver, kmod, vm) build on it.
"""
