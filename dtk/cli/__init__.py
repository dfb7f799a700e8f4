"""The `dtk` command line. Thin: parse options, call a feature, print its result."""
