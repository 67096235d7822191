"""specens.inference: the top layer. Its `cli` module is the `specens` command."""
