"""Tools that work on whole models: `reduce` (shrink a model to a minimal graph a pipeline still fails on)."""
