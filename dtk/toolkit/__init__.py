"""Toolkit images: one per kernel release, with its RT sibling, exact compiler and tools."""
