"""Administrative commands (placeholder registry; filled by the admin CLI)."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(group: click.Group) -> None:
    """Attach the administrative command groups to ``group``."""
