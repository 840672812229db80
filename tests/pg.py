"""PostgreSQL for tests: is a server reachable, and a throwaway database per use.

``TOKENSMITH_TEST_POSTGRES`` names the server (default: the local one with trust auth);
tests that need it call ``require_postgres()``, which skips with a reason where there is no
PostgreSQL unless ``TOKENSMITH_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from tests.conftest import require_or_skip

ADMIN_URL = os.environ.get(
    "TOKENSMITH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_available() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def require_postgres() -> None:
    require_or_skip(
        postgres_available(),
        "TOKENSMITH_REQUIRE_POSTGRES",
        f"no PostgreSQL server reachable at {ADMIN_URL}",
    )


@contextlib.contextmanager
def temporary_database() -> Iterator[str]:
    """A fresh, empty database; yields its URL and drops it afterwards."""
    import psycopg

    name = f"tokensmith_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
