"""``tokensmith``: serve, administer and inspect a tokensmith server.

Every server setting is a flag here and a ``TOKENSMITH_*`` variable (``config.load_settings``
merges them). Administrative commands talk to the server's REST API with the owner's
credentials (``DATA_DIR/credentials/owner.json``) or a given credentials file; errors print as
one line on stderr with a non-zero exit.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from tokensmith import __version__
from tokensmith.config import load_settings

__all__ = ["main"]


def _settings(**flags: Any) -> Any:
    try:
        return load_settings(flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokensmith")
def cli() -> None:
    """A self-hosted, Google-compatible short-lived credentials service."""


_server_options = [
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Data directory (default ./.tokensmith; TOKENSMITH_DATA_DIR).",
    ),
    click.option(
        "--database",
        default=None,
        help="Database URL (default: SQLite in the data dir; TOKENSMITH_DATABASE).",
    ),
]


def server_options(func: Any) -> Any:
    for option in reversed(_server_options):
        func = option(func)
    return func


@cli.command()
@server_options
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8080).")
@click.option(
    "--project",
    default=None,
    help="Default project, created on first start (default tokensmith-local).",
)
@click.option("--owner-email", default=None, help="Email of the owner user created on first start.")
@click.option(
    "--issuer",
    default=None,
    help="Issuer (iss) of the tokens (default https://accounts.google.com).",
)
@click.option(
    "--public-url",
    default=None,
    help="URL clients reach this server at (default http://HOST:PORT).",
)
@click.option(
    "--kek-file",
    default=None,
    help="Key-encryption key file (default DATA_DIR/kek.key, generated if absent).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Worker processes (default: one per CPU core; 1 serves in-process).",
)
@click.option(
    "--proxy-port",
    type=click.IntRange(min=0),
    default=None,
    help="Also serve the HTTPS proxy for Google's hard-coded hosts on this port (0: off).",
)
@click.option(
    "--proxy-domains",
    default=None,
    metavar="DOMAIN,…",
    help="Extra universe domains the proxy serves (iamcredentials.DOMAIN, oauth2.DOMAIN, …).",
)
@click.option("--log-level", default=None, type=click.Choice(["debug", "info", "warning", "error"]))
def serve(**flags: Any) -> None:
    """Run the server (SQLite in the data directory unless --database says otherwise)."""
    from tokensmith.main import serve as run
    from tokensmith.store.migrate import SchemaError

    settings = _settings(**flags)
    try:
        run(settings)
    except SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot start: {exc}", err=True)
        sys.exit(1)


@cli.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@server_options
def db_upgrade(**flags: Any) -> None:
    """Migrate the database to the newest schema this version knows."""
    from tokensmith.store import migrate
    from tokensmith.store.sql import make_engine

    settings = _settings(**flags)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
    except migrate.SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"database at revision {migrate.current_revision(engine)}")


@db.command("current")
@server_options
def db_current(**flags: Any) -> None:
    """Print the database's schema revision and the newest this version knows."""
    from tokensmith.store import migrate
    from tokensmith.store.sql import make_engine

    settings = _settings(**flags)
    engine = make_engine(settings.database_url)
    click.echo(f"current: {migrate.current_revision(engine) or '(empty)'}")
    click.echo(f"head:    {migrate.head_revision()}")


def main() -> None:
    from tokensmith.cli import admin, auth, metadata, operator

    admin.register(cli)
    operator.register(cli)
    metadata.register(cli)
    auth.register(cli)
    cli()
