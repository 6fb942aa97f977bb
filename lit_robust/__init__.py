"""lit_robust."""
