"""specens.cli: the top layer. The root ``specens`` command (:mod:`.main`), which gathers each
stage's subcommands and prints every user error as one line, and ``specens demo`` (:mod:`.demo`),
the whole pipeline on the embedded glyph dataset. The one package that may import every stage."""
