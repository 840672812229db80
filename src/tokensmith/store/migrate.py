"""Schema migrations with Alembic, run programmatically on a live engine.

``upgrade`` brings a database to the newest schema this version knows; ``check`` refuses a
database whose revision this version does not know (migrated by a newer tokensmith), so an old
binary never writes into a schema it does not understand.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

__all__ = ["SchemaError", "check", "current_revision", "head_revision", "upgrade"]

_SCRIPTS = Path(__file__).with_name("migrations")


class SchemaError(Exception):
    """The database schema is not one this version of tokensmith can run on."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check(engine: Engine) -> None:
    """Raise ``SchemaError`` unless the database is at a revision this version knows."""
    current = current_revision(engine)
    scripts = ScriptDirectory.from_config(_config())
    if current is None:
        raise SchemaError("the database has no tokensmith schema; run `tokensmith db upgrade`")
    known = {rev.revision for rev in scripts.walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"the database is at schema revision {current!r}, which this version of tokensmith "
            f"does not know (newest known: {head_revision()!r}); it was migrated by a newer "
            "tokensmith: upgrade this node instead"
        )
    if current != head_revision():
        raise SchemaError(
            f"the database is at schema revision {current!r}, older than this version's "
            f"{head_revision()!r}; run `tokensmith db upgrade`"
        )


def upgrade(engine: Engine) -> None:
    """Migrate to the newest revision; refuses a database migrated by a newer version."""
    current = current_revision(engine)
    if current is not None:
        known = {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}
        if current not in known:
            check(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Nodes starting together migrate one at a time (the lock ends with the transaction).
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('tokensmith:migrate'))"))
        config = _config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
