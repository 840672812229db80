"""Persistence: the ``Store`` protocol, its SQL implementation and the schema migrations."""
