"""``tokensmith auth``: gcloud's token commands, against a tokensmith server.

- ``print-access-token [--scopes=S,…]``: an access token of the credentials (``authorized_user``:
  the refresh grant, RFC 6749 §6; ``service_account`` key: the JWT bearer grant, RFC 7523);
- ``print-identity-token --audiences=AUD [--include-email]``: an ID token, from the JWT bearer
  grant with ``target_audience`` for a key file, or the refresh grant's ``id_token`` for a user
  (whose audience is always the OAuth client id, so ``--audiences`` needs a key file or
  impersonation, as in gcloud);
- both with ``--impersonate-service-account=[DELEGATE,…,]TARGET``, gcloud's comma form of a
  delegation chain: the last entry is the target, the others its delegates in order, through
  the IAM Credentials API (``generateAccessToken``, ``generateIdToken``);
- ``application-default --type authorized_user|service_account|impersonated_service_account``:
  an application-default-credentials file (mode 0600) that Google's libraries load; the
  impersonated kind as COMPAT.md §2d describes it, with Node's extra ``endpoint`` field.

Connection options as the administrative commands': ``--server URL`` (default the ``api`` of
``DATA_DIR/server.json``), ``--credentials FILE`` (default the owner's ``DATA_DIR/credentials/
owner.json``), ``--data-dir DIR``. Failures are one ``error:`` line: exit 1 when the server or the
credentials said no, 2 when the command line was wrong.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import os
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tokensmith.cli.admin import DEFAULT_SERVER
from tokensmith.cli.announced import announced_api
from tokensmith.cli.output import OneLineGroup, UsageProblem
from tokensmith.client import ClientError
from tokensmith.client.errors import error_from_response, unreachable
from tokensmith.clock import SystemClock
from tokensmith.config import load_settings

__all__ = ["parse_chain", "register"]

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
ADC_NAME = "application_default_credentials.json"
_USER_FIELDS = ("type", "client_id", "client_secret", "refresh_token", "token_uri", "account")
_COMMON_FIELDS = ("universe_domain", "quota_project_id")

Json = dict[str, Any]


def _usage(message: str) -> UsageProblem:
    return UsageProblem(message, click.get_current_context(silent=True))


def parse_chain(value: str) -> tuple[str, tuple[str, ...]]:
    """gcloud's ``A,B,TARGET`` → (TARGET, (A, B)): the last entry is the account impersonated."""
    entries = [e.strip() for e in value.split(",")]
    if not value.strip() or any(not e for e in entries):
        raise ValueError(
            f"--impersonate-service-account {value!r}: give one email, or a comma-separated "
            "chain DELEGATE,…,TARGET with no empty entries"
        )
    return entries[-1], tuple(entries[:-1])


# the credentials a command acts as ------------------------------------------------------------


class Session:
    """The server, the credentials file, and an HTTP client; resolved when first needed."""

    def __init__(self, data_dir: str | None, server: str | None, credentials: str | None) -> None:
        try:
            settings = load_settings({"data_dir": data_dir})
        except ValueError as exc:
            raise _usage(str(exc)) from None
        self.data_dir = settings.data_dir
        self.credentials_dir = settings.credentials_dir
        self._server = server
        self._credentials = credentials
        self._info: Json | None = None
        self.http = httpx.Client(timeout=30.0)
        self.clock = SystemClock()

    def close(self) -> None:
        self.http.close()

    @property
    def server(self) -> str:
        return (self._server or announced_api(self.data_dir) or DEFAULT_SERVER).rstrip("/")

    @property
    def credentials_path(self) -> Path:
        if self._credentials is not None:
            return Path(self._credentials)
        owner = self.credentials_dir / "owner.json"
        if not owner.exists():
            raise ClientError(
                f"no credentials: {owner} does not exist; pass --credentials FILE, or "
                "--data-dir DIR of the server whose owner you are"
            )
        return owner

    @property
    def info(self) -> Json:
        """The credentials file, parsed and checked to be a kind this command can use."""
        if self._info is None:
            self._info = _read_credentials(self.credentials_path)
        return self._info

    @property
    def kind(self) -> str:
        return str(self.info["type"])

    # token endpoint -----------------------------------------------------------------------

    def token_response(self, form: dict[str, str]) -> Json:
        uri = str(self.info["token_uri"])
        return _post_json(
            self.http,
            uri,
            invalid=f"invalid token_uri {uri!r}",
            not_json=f"the token endpoint {uri} answered with something other than JSON",
            data=form,
        )

    def _assertion(self, claims: Json) -> str:
        now = int(self.clock.now())
        key = _private_key(self.info, str(self.credentials_path))
        payload = {
            "iss": self.info["client_email"],
            "aud": GOOGLE_TOKEN_AUDIENCE,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            **claims,
        }
        return jwt.encode(
            payload, key, algorithm="RS256", headers={"kid": self.info["private_key_id"]}
        )

    def access_token(self, scopes: Sequence[str]) -> str:
        """The credentials' own access token (``scopes`` empty: a user's granted scopes)."""
        if self.kind == "authorized_user":
            form = _refresh_form(self.info)
            if scopes:
                form["scope"] = " ".join(scopes)
        else:
            scope = " ".join(scopes or (CLOUD_PLATFORM,))
            form = {"grant_type": JWT_BEARER, "assertion": self._assertion({"scope": scope})}
        return _field(self.token_response(form), "access_token", "the token endpoint")

    def id_token(self, audience: str | None) -> str:
        """The credentials' own ID token: for ``audience`` (a key), for the client (a user)."""
        if self.kind == "authorized_user":
            body = self.token_response(_refresh_form(self.info))
            return _field(body, "id_token", "the token endpoint's refresh grant")
        assert audience is not None
        assertion = self._assertion({"target_audience": audience})
        body = self.token_response({"grant_type": JWT_BEARER, "assertion": assertion})
        return _field(body, "id_token", "the token endpoint")

    # IAM Credentials API ------------------------------------------------------------------

    def impersonate(self, target: str, method: str, body: Json) -> Json:
        """``POST …/serviceAccounts/TARGET:method`` with the credentials' IAM-scoped token."""
        scopes = () if self.kind == "authorized_user" else (IAM_SCOPE,)
        path = f"/v1/projects/-/serviceAccounts/{urllib.parse.quote(target, safe='@')}:{method}"
        return self._post(path, body, self.access_token(scopes))

    def create_key(self, email: str) -> Json:
        """A new user-managed key of ``email`` (IAM ``keys.create``), as its key file."""
        scopes = () if self.kind == "authorized_user" else (CLOUD_PLATFORM,)
        path = f"/v1/projects/-/serviceAccounts/{urllib.parse.quote(email, safe='@')}/keys"
        created = self._post(path, {}, self.access_token(scopes))
        try:
            key_file = json.loads(base64.b64decode(created["privateKeyData"], validate=True))
        except (KeyError, TypeError, ValueError, binascii.Error):
            key_file = None
        if not isinstance(key_file, dict):
            raise ClientError(
                f"the server created key {created.get('name', '?')} of {email} without a "
                "readable privateKeyData; delete it with 'tokensmith keys delete'"
            )
        return key_file

    def _post(self, path: str, body: Json, token: str) -> Json:
        return _post_json(
            self.http,
            self.server + path,
            invalid=f"invalid server URL {self.server!r}",
            not_json=f"{self.server} answered POST {path} with something other than JSON",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


def _post_json(
    http: httpx.Client, url: str, *, invalid: str, not_json: str, **request: Any
) -> Json:
    """POST to ``url`` and return its JSON object; every failure is one ClientError line."""
    try:
        response = http.post(url, **request)
    except httpx.TransportError as exc:
        raise unreachable(url, exc) from None
    except httpx.InvalidURL as exc:
        raise ClientError(f"{invalid}: {exc}") from None
    if response.status_code != 200:
        raise error_from_response(response)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ClientError(not_json)
    return answer


def _read_credentials(path: Path) -> Json:
    where = f"credentials file {path}"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClientError(f"{where} does not exist") from None
    except OSError as exc:
        raise ClientError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise ClientError(f"{where} is not valid JSON") from None
    if not isinstance(info, dict):
        raise ClientError(f"{where} does not hold a JSON object")
    kind = info.get("type")
    required = {
        "authorized_user": ("client_id", "client_secret", "refresh_token", "token_uri"),
        "service_account": ("client_email", "private_key", "private_key_id", "token_uri"),
    }.get(str(kind))
    if required is None:
        raise ClientError(
            f"{where} has type {kind!r}; expected 'authorized_user' or 'service_account'"
        )
    for name in required:
        _field(info, name, where)
    return info


def _field(info: Json, name: str, where: str) -> str:
    value = info.get(name)
    if not isinstance(value, str) or not value:
        raise ClientError(f"{where} has no {name!r}")
    return value


def _refresh_form(info: Json) -> dict[str, str]:
    return {
        "grant_type": "refresh_token",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "refresh_token": info["refresh_token"],
    }


def _private_key(info: Json, where: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(str(info["private_key"]).encode(), None)
    except (ValueError, TypeError):
        raise ClientError(f"{where}: private_key is not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ClientError(f"{where}: private_key must be an RSA key")
    return key


def _delegates(chain: Sequence[str]) -> list[str] | None:
    return [f"projects/-/serviceAccounts/{d}" for d in chain] or None


def _write_private(path: Path, data: Json) -> None:
    """Replace ``path`` with ``data`` as JSON, mode 0600 from the first byte (temp + rename)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# commands -------------------------------------------------------------------------------------


_CONNECTION_OPTIONS = [
    click.option("--server", metavar="URL", default=None, help="The tokensmith server's URL."),
    click.option(
        "--credentials",
        metavar="FILE",
        default=None,
        help="authorized_user or service_account JSON (default: the owner's).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Data directory of the server (TOKENSMITH_DATA_DIR; default ./.tokensmith).",
    ),
]

_impersonate = click.option(
    "--impersonate-service-account",
    "impersonate",
    metavar="[DELEGATE,…,]EMAIL",
    default=None,
    help="Act as this service account; a comma-separated list is a delegation chain whose "
    "last entry is the target.",
)


def _command(func: Callable[..., None]) -> Callable[..., None]:
    """Give ``func(session, ...)`` the connection options; report ClientError as exit 1."""

    @functools.wraps(func)
    def command(
        *, server: str | None, credentials: str | None, data_dir: str | None, **kwargs: Any
    ) -> None:
        session = Session(data_dir, server, credentials)
        try:
            func(session, **kwargs)
        except ClientError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        finally:
            session.close()

    for option in reversed(_CONNECTION_OPTIONS):
        command = option(command)
    return command


def _chain(impersonate: str | None) -> tuple[str, tuple[str, ...]] | None:
    if impersonate is None:
        return None
    try:
        return parse_chain(impersonate)
    except ValueError as exc:
        raise _usage(str(exc)) from None


@click.group("auth", cls=OneLineGroup)
def auth() -> None:
    """Print tokens and write application-default credentials, as gcloud auth does."""


@auth.command("print-access-token")
@click.option(
    "--scopes",
    default=None,
    metavar="SCOPE,…",
    help="Comma-separated OAuth scopes (default cloud-platform; a user's granted scopes).",
)
@_impersonate
@_command
def print_access_token(session: Session, scopes: str | None, impersonate: str | None) -> None:
    """Print an access token of the credentials, or of the impersonated service account."""
    wanted = tuple(s.strip() for s in (scopes or "").split(",") if s.strip())
    chain = _chain(impersonate)
    if chain is None:
        click.echo(session.access_token(wanted))
        return
    target, delegates = chain
    body: Json = {
        "delegates": _delegates(delegates),
        "scope": list(wanted or (CLOUD_PLATFORM,)),
        "lifetime": "3600s",
    }
    answer = session.impersonate(target, "generateAccessToken", body)
    click.echo(_field(answer, "accessToken", f"generateAccessToken for {target}"))


@auth.command("print-identity-token")
@click.option(
    "--audiences",
    "audience",
    metavar="AUDIENCE",
    default=None,
    help="The token's audience (aud): the URL or client id of the service it is for.",
)
@click.option(
    "--include-email",
    is_flag=True,
    help="Add the email and email_verified claims (needs --impersonate-service-account).",
)
@click.option(
    "--token-format",
    type=click.Choice(["standard", "full"]),
    default="standard",
    show_default=True,
    help="'full' applies to Compute Engine (metadata server) tokens only, as in gcloud.",
)
@_impersonate
@_command
def print_identity_token(
    session: Session,
    audience: str | None,
    include_email: bool,
    token_format: str,
    impersonate: str | None,
) -> None:
    """Print an ID token of the credentials, or of the impersonated service account."""
    chain = _chain(impersonate)
    if token_format == "full":
        raise _usage(
            "--token-format=full needs a Compute Engine service account: ask the metadata "
            "server (…/instance/service-accounts/default/identity?audience=AUD&format=full)"
        )
    if include_email and chain is None:
        raise _usage("--include-email requires --impersonate-service-account")
    if audience is not None and not audience.strip():
        raise _usage("--audiences must not be empty")
    if chain is not None:
        if audience is None:
            raise _usage("--audiences is required with --impersonate-service-account")
        target, delegates = chain
        body: Json = {
            "audience": audience,
            "delegates": _delegates(delegates),
            "includeEmail": include_email,
        }
        answer = session.impersonate(target, "generateIdToken", body)
        click.echo(_field(answer, "token", f"generateIdToken for {target}"))
        return
    if session.kind == "authorized_user":
        if audience is not None:
            raise _usage(
                f"--audiences needs a service account: the ID token of a user "
                f"({session.credentials_path}) is always for its OAuth client "
                f"({session.info['client_id']}); pass --impersonate-service-account, or "
                "--credentials with a service-account key file"
            )
        click.echo(session.id_token(None))
        return
    if audience is None:
        raise _usage("--audiences is required for a service-account key")
    click.echo(session.id_token(audience))


@auth.command("application-default")
@click.option(
    "--type",
    "kind",
    required=True,
    type=click.Choice(["authorized_user", "service_account", "impersonated_service_account"]),
    help="The kind of application-default-credentials file to write.",
)
@_impersonate
@click.option(
    "--service-account",
    "account",
    metavar="EMAIL",
    default=None,
    help="With --type service_account: create a new key of this account and write it.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Where to write the file (mode 0600; default DATA_DIR/credentials/{ADC_NAME}).",
)
@_command
def application_default(
    session: Session,
    kind: str,
    impersonate: str | None,
    account: str | None,
    output: Path | None,
) -> None:
    """Write an application-default-credentials file for Google's client libraries."""
    chain = _chain(impersonate)
    if chain is not None and kind != "impersonated_service_account":
        raise _usage("--impersonate-service-account goes with --type impersonated_service_account")
    if account is not None and kind != "service_account":
        raise _usage("--service-account goes with --type service_account")
    if output is None:
        output = session.credentials_dir / ADC_NAME
        output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif not output.parent.is_dir():
        raise ClientError(f"cannot write {output}: {output.parent} is not a directory")
    if kind == "authorized_user":
        content = _authorized_user_file(session)
    elif kind == "service_account":
        content = _service_account_file(session, account)
    else:
        if chain is None:
            raise _usage("--type impersonated_service_account needs --impersonate-service-account")
        content = _impersonated_file(session, *chain)
    try:
        _write_private(output, content)
    except OSError as exc:
        raise ClientError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"Wrote {kind} application-default credentials to {output} (mode 0600).")
    click.echo(f"Use them with: export GOOGLE_APPLICATION_CREDENTIALS={output}")


def _source(info: Json) -> Json:
    """The credentials as an ADC file (or ``source_credentials``) carries them."""
    if info["type"] == "authorized_user":
        fields = (*_USER_FIELDS, *_COMMON_FIELDS)
        return {k: info[k] for k in fields if k in info}
    return dict(info)


def _authorized_user_file(session: Session) -> Json:
    if session.kind != "authorized_user":
        raise ClientError(
            f"--type authorized_user needs a user's credentials; {session.credentials_path} "
            f"is a {session.kind} key"
        )
    return _source(session.info)


def _service_account_file(session: Session, account: str | None) -> Json:
    if account is not None:
        return session.create_key(account)
    if session.kind == "service_account":
        return _source(session.info)
    raise _usage(
        "--type service_account needs --service-account EMAIL (a new key is created), or "
        "--credentials with a service-account key file"
    )


def _impersonated_file(session: Session, target: str, delegates: tuple[str, ...]) -> Json:
    server = session.server
    return {
        "type": "impersonated_service_account",
        # Python and gcloud read only the account out of this URL and call
        # iamcredentials.googleapis.com (reach tokensmith through its HTTPS proxy); Node honours
        # "endpoint" below (COMPAT.md §2d).
        "service_account_impersonation_url": (
            f"{server}/v1/projects/-/serviceAccounts/{target}:generateAccessToken"
        ),
        "delegates": _delegates(delegates) or [],
        "scopes": [CLOUD_PLATFORM],
        "source_credentials": _source(session.info),
        "endpoint": server,
    }


def register(group: click.Group) -> None:
    """Attach ``auth`` to ``group``; calling it again changes nothing."""
    group.commands.setdefault("auth", auth)
