"""specens.specialists: one specialist per group of confusable classes (METHOD §4), trained in parallel with Ray."""
