"""The HTTP edge: one module per Google API surface, errors rendered only in ``errors``."""
