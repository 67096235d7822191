"""specens.specialists: one specialist per group of confusable classes (docs/method.md §4), trained in
parallel with Ray."""
