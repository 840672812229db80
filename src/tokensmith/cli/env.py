"""``tokensmith env``: the variables that point Google's unmodified clients at a running server.

``eval "$(tokensmith env)"`` is all a shell needs. The command reads ``DATA_DIR/server.json``
(what the running server listens on) and prints, for the parts that are running
(``shellenv`` says which variable serves which client):

- ``GOOGLE_APPLICATION_CREDENTIALS``: the owner's ``authorized_user`` file by default;
  ``--as EMAIL`` a key file of that service account, created once through the owner and kept in
  ``DATA_DIR/credentials/EMAIL.json`` (mode 0600); ``--credentials FILE`` any other principal;
  ``--no-credentials`` none, so that libraries fall back to the metadata server;
- gcloud's token endpoint and IAM Credentials API override;
- the metadata server's variables (``--metadata-port``), the HTTPS proxy's and its CA's
  (``--proxy-port``); a part that is not running is left out with a ``# note:`` line saying
  which flag starts it.

``--format shell|fish|dotenv|json`` picks the syntax. Failures are one ``Error:`` line, exit 1
(exit 2 for a wrong command line), and print nothing for ``eval`` to run.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import click

from tokensmith.cli.shellenv import (
    FORMATS,
    Credentials,
    EnvProblem,
    Note,
    choose_metadata,
    environment,
    render,
)
from tokensmith.client import Client, ClientError, load_credentials
from tokensmith.clock import Clock, SystemClock
from tokensmith.config import load_settings

__all__ = ["register", "service_account_key"]

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"


# the running server ---------------------------------------------------------------------------


def _running(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _read_record(data_dir: Path, *, required: bool) -> dict[str, Any] | None:
    """``server.json`` of the server running on ``data_dir``; None if none and not required."""
    path = data_dir / "server.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        if not required:
            return None
        raise click.ClickException(
            f"no tokensmith server is running on {data_dir} ({path} does not exist)"
        ) from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if not isinstance(record, dict) or not _running(record.get("pid")):
        if not required:
            return None
        raise click.ClickException(
            f"{path} names a server that is no longer running; start `tokensmith serve` again"
        )
    return record


def _has_system_roots(proxy: dict[str, Any]) -> bool:
    """Whether the proxy's bundle holds more certificates than the local CA alone."""
    try:
        bundle = Path(str(proxy["ca_bundle"])).read_bytes()
        ca = Path(str(proxy["ca"])).read_bytes()
    except (KeyError, OSError):
        return False
    return bundle.count(_CERT_BEGIN) > ca.count(_CERT_BEGIN)


# credentials ----------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, readable by its owner only (0600)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _key_usable(client: Client, email: str, key_file: dict[str, Any], clock: Clock) -> bool:
    """Whether the server still has ``key_file``'s key, enabled and unexpired."""
    key_id = key_file.get("private_key_id")
    if key_file.get("client_email") != email or not isinstance(key_id, str) or not key_id:
        return False
    path = f"/v1/projects/-/serviceAccounts/{email}/keys/{urllib.parse.quote(key_id, safe='')}"
    try:
        key = client.get(path)
    except ClientError as exc:
        if exc.code == 404:
            return False
        raise
    if key.get("disabled"):
        return False
    try:
        until = _dt.datetime.fromisoformat(str(key.get("validBeforeTime")).replace("Z", "+00:00"))
    except ValueError:
        return True  # an expiry the client cannot read: the server decides when it is used
    return until.timestamp() > clock.now()


def service_account_key(
    data_dir: Path, record: dict[str, Any], email: str, clock: Clock | None = None
) -> Path:
    """``DATA_DIR/credentials/EMAIL.json``: a key file of ``email`` (0600), made by the owner.

    An existing file is reused while the server still has its key, enabled and unexpired (its
    ``token_uri`` is brought up to date if the server moved); otherwise a new key replaces it.
    """
    if "@" not in email or "/" in email or email.startswith("."):
        raise click.BadParameter(f"{email!r} is not a service account email", param_hint="--as")
    clock = clock or SystemClock()
    credentials_dir = data_dir / "credentials"
    path = credentials_dir / f"{email}.json"
    token_uri = str(record["token_uri"])
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = None  # absent or unreadable: a fresh key replaces it
    try:
        with Client(str(record["api"]), load_credentials(credentials_dir / "owner.json")) as owner:
            if isinstance(existing, dict) and _key_usable(owner, email, existing, clock):
                if existing.get("token_uri") != token_uri or path.stat().st_mode & 0o077:
                    existing["token_uri"] = token_uri
                    _write_private(path, json.dumps(existing, indent=2).encode())
                return path.resolve()
            created = owner.post(f"/v1/projects/-/serviceAccounts/{email}/keys", {})
    except ClientError as exc:
        raise click.ClickException(f"cannot get a key for {email}: {exc}") from None
    try:
        key_file = base64.b64decode(created["privateKeyData"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise click.ClickException(
            f"the server returned a key for {email} without a readable privateKeyData"
        ) from None
    credentials_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(path, key_file)
    return path.resolve()


def _credentials(
    data_dir: Path,
    record: dict[str, Any],
    as_account: str | None,
    credentials_file: str | None,
    no_credentials: bool,
) -> Credentials | Note:
    if no_credentials:
        return Note(
            "GOOGLE_APPLICATION_CREDENTIALS left out (--no-credentials): Google's libraries "
            "use the metadata server, or gcloud's application default credentials"
        )
    if as_account is not None:
        path = service_account_key(data_dir, record, as_account)
        return Credentials(path, f"a key of {as_account}")
    if credentials_file is not None:
        path = Path(credentials_file).expanduser().resolve()
        if not path.is_file():
            raise click.BadParameter(
                f"{credentials_file} is not a file", param_hint="--credentials"
            )
        return Credentials(path, str(path))
    owner = (data_dir / "credentials" / "owner.json").resolve()
    if not owner.is_file():
        return Note(
            f"GOOGLE_APPLICATION_CREDENTIALS left out: no owner credentials at {owner}; "
            "pass --as EMAIL or --credentials FILE"
        )
    return Credentials(owner, "the owner (authorized_user)")


# the command ----------------------------------------------------------------------------------


@click.command("env")
@click.option(
    "--data-dir", default=None, help="Data directory of the server (TOKENSMITH_DATA_DIR)."
)
@click.option(
    "--instance", default=None, help="Metadata instance name or HOST:PORT (default: the first)."
)
@click.option(
    "--metadata",
    "address",
    default=None,
    help="HOST:PORT of a metadata server (e.g. a `tokensmith metadata` agent) instead.",
)
@click.option(
    "--as",
    "as_account",
    metavar="EMAIL",
    default=None,
    help="Act as this service account: a key file of it in DATA_DIR/credentials/ (made once).",
)
@click.option(
    "--credentials",
    "credentials_file",
    metavar="FILE",
    default=None,
    help="GOOGLE_APPLICATION_CREDENTIALS for another principal (default: the owner's).",
)
@click.option(
    "--no-credentials",
    is_flag=True,
    help="Leave GOOGLE_APPLICATION_CREDENTIALS out (libraries then use the metadata server).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="shell",
    show_default=True,
    help="Syntax: POSIX shell, fish, a .env file, or a JSON object.",
)
def env(
    data_dir: str | None,
    instance: str | None,
    address: str | None,
    as_account: str | None,
    credentials_file: str | None,
    no_credentials: bool,
    output_format: str,
) -> None:
    """Print the variables that point Google's clients at a running tokensmith server.

    Use it as: eval "$(tokensmith env)"   (fish: tokensmith env --format fish | source)
    """
    given = [
        flag
        for flag, value in (
            ("--as", as_account is not None),
            ("--credentials", credentials_file is not None),
            ("--no-credentials", no_credentials),
        )
        if value
    ]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} exclude each other")
    directory = Path(load_settings({"data_dir": data_dir}).data_dir)
    record = _read_record(directory, required=address is None)
    if record is None and (as_account or credentials_file):
        raise click.ClickException(f"no tokensmith server is running on {directory}")
    try:
        metadata = choose_metadata(record, instance, address)
    except EnvProblem as exc:
        raise click.ClickException(str(exc)) from None
    credentials: Credentials | Note = Note("")
    if record is not None:
        credentials = _credentials(directory, record, as_account, credentials_file, no_credentials)
    proxy = record.get("proxy") if record is not None else None
    lines = environment(
        record,
        credentials=credentials,
        metadata=metadata,
        bundle_has_roots=isinstance(proxy, dict) and _has_system_roots(proxy),
    )
    click.echo(render(lines, output_format))


def register(group: click.Group) -> None:
    """Add ``env`` to ``group``."""
    group.add_command(env)
