"""The `dtk` command line. Thin: parse and validate options, call a workflow or a
feature, print its result (text, or `--json`).

Owns: click commands, one-screen errors, exit statuses. May import anything
below it; nothing imports it (but `dtk.__main__`).
"""
