"""Operator commands that work on the store directly (the server need not run): reading the
audit log, and forcing a key rotation.

They open the same database and key-encryption key a server would (``--data-dir``,
``--database``, ``--kek-file`` and their ``TOKENSMITH_*`` variables).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
from typing import Any

import click

from tokensmith.clock import Clock, SystemClock, to_datetime
from tokensmith.config import Settings, load_settings

__all__ = ["parse_when", "register"]

_RELATIVE = re.compile(r"^-?(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float) -> float:
    """``2026-11-24T10:00:00Z``, ``2026-11-24`` or a relative ``-2h`` / ``30m`` (ago)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - int(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a timestamp (2026-11-24T10:00:00Z) nor relative (-2h)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


def _clock() -> Clock:
    """The clock in the click context's ``obj`` (tests inject one), else the system's."""
    ctx = click.get_current_context()
    clock = (ctx.obj or {}).get("clock") if isinstance(ctx.obj, dict) else None
    return clock if clock is not None else SystemClock()


def _settings(data_dir: str | None, database: str | None, kek_file: str | None) -> Settings:
    return load_settings({"data_dir": data_dir, "database": database, "kek_file": kek_file})


def _open_store(settings: Settings) -> Any:
    from tokensmith.store import migrate
    from tokensmith.store.sql import SqlStore, make_engine

    engine = make_engine(settings.database_url)
    try:
        migrate.check(engine)
    except migrate.SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    return SqlStore(engine)


_store_options = [
    click.option("--data-dir", default=None, help="Data directory (TOKENSMITH_DATA_DIR)."),
    click.option("--database", default=None, help="Database URL (TOKENSMITH_DATABASE)."),
]


def _with_store_options(func: Any) -> Any:
    for option in reversed(_store_options):
        func = option(func)
    return func


@click.command("audit")
@_with_store_options
@click.option("--account", default="", help="Records about this service account (email).")
@click.option("--principal", default="", help="Caller: a member (user:x) or an email.")
@click.option("--method", default="", help="API method, e.g. generateAccessToken.")
@click.option("--outcome", type=click.Choice(["granted", "denied", "error"]), default=None)
@click.option("--since", default=None, help="From (ISO time, or relative like -2h).")
@click.option("--until", default=None, help="Until (ISO time, or relative like -5m).")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def audit(
    data_dir: str | None,
    database: str | None,
    account: str,
    principal: str,
    method: str,
    outcome: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    fmt: str,
) -> None:
    """Show the audit log, newest first: who asked for which credential, and the outcome."""
    now = _clock().now()
    store = _open_store(_settings(data_dir, database, None))
    records = store.query_audit(
        principal=principal,
        account=account.lower(),
        method=method,
        outcome=outcome or "",
        since=parse_when(since, now) if since else None,
        until=parse_when(until, now) if until else None,
        limit=limit,
    )
    for record in records:
        when = to_datetime(record.time).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if fmt == "json":
            click.echo(
                json.dumps(
                    {
                        "time": when,
                        "method": record.method,
                        "principal": record.principal,
                        "resource": record.resource,
                        "permission": record.permission,
                        "outcome": record.outcome,
                        "detail": record.detail,
                    },
                    sort_keys=True,
                )
            )
        else:
            detail = " ".join(f"{k}={v}" for k, v in sorted(record.detail.items()))
            click.echo(
                f"{when} {record.outcome:7} {record.method} {record.principal} -> "
                f"{record.resource} {record.permission} {detail}".rstrip()
            )
    store.close()


@click.command("rotate")
@_with_store_options
@click.option("--kek-file", default=None, help="Key-encryption key file (TOKENSMITH_KEK_FILE).")
@click.option(
    "--account",
    default="",
    help="Rotate this service account's system keys instead of the issuer's.",
)
def rotate(data_dir: str | None, database: str | None, kek_file: str | None, account: str) -> None:
    """Force a key rotation: the new key is published now and signs after the prepublish time.

    Running servers pick the new key up within seconds; verifiers that honour caching have it
    before it first signs.
    """
    from tokensmith.crypto.sealing import load_or_create_kek
    from tokensmith.services.keyring import Keyring
    from tokensmith.services.sakeys import AccountKeys

    settings = _settings(data_dir, database, kek_file)
    if not settings.kek and not settings.kek_path.exists():
        click.echo(
            f"error: no key-encryption key at {settings.kek_path}; is --data-dir the server's?",
            err=True,
        )
        sys.exit(2)
    store = _open_store(settings)
    kek, _ = load_or_create_kek(settings.kek_path, settings.kek)
    clock = _clock()
    if account:
        record = store.find_service_account(account.lower())
        if record is None:
            click.echo(f"error: no service account {account}", err=True)
            sys.exit(1)
        key_id = AccountKeys(store, kek, clock).rotate(record)
        label = account
    else:
        key_id = Keyring(store, kek, clock).ensure(force=True)
        label = "issuer"
    if key_id is None:
        click.echo(f"{label}: a new key is already published and waiting to sign; nothing to do")
    else:
        click.echo(f"{label}: new key {key_id} published; it signs after the prepublish time")
    store.close()


def register(group: click.Group) -> None:
    """Attach ``audit`` and ``keys rotate`` (creating the ``keys`` group if absent)."""
    if "audit" not in group.commands:
        group.add_command(audit)
    keys = group.commands.get("keys")
    if not isinstance(keys, click.Group):
        keys = click.Group("keys", help="Keys: user-managed service-account keys and rotation.")
        group.add_command(keys)
    if "rotate" not in keys.commands:
        keys.add_command(rotate)
