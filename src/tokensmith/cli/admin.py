"""Administrative commands: service accounts, their keys, IAM policies and the org policy.

They talk to a server's REST API the way gcloud talks to Google's (IAM API v1, Resource
Manager v1), through ``tokensmith.client``. Every command takes the same connection options:

- ``--server URL``: default, the ``api`` a server running on ``DATA_DIR`` announced in
  ``DATA_DIR/server.json``, else ``http://127.0.0.1:8080``;
- ``--credentials FILE``: default ``DATA_DIR/credentials/owner.json`` (the owner's);
- ``--project ID``: default ``TOKENSMITH_PROJECT`` or ``tokensmith-local``;
- ``--data-dir DIR``: default ``TOKENSMITH_DATA_DIR`` or ``./.tokensmith``;
- ``--format text|json``: text for people, the API's JSON for programs.

A failure is one line on stderr starting ``error:``; the exit status is 1 when the server (or
the credentials) said no, 2 when the command line was wrong.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from tokensmith.cli.announced import announced_api
from tokensmith.cli.output import (
    OneLineGroup,
    UsageProblem,
    accounts_table,
    describe,
    dumps,
    keys_table,
    org_policy_text,
    policy_text,
)
from tokensmith.client import Client, ClientError, load_credentials
from tokensmith.client.orgpolicy import (
    LIFETIME_EXTENSION,
    allow_lifetime_extension,
    clear_org_policy,
    get_org_policy,
)
from tokensmith.client.policy import get_iam_policy, update_iam_policy, with_member, without_member
from tokensmith.config import load_settings

__all__ = ["DEFAULT_SERVER", "Session", "register"]

DEFAULT_SERVER = "http://127.0.0.1:8080"
_SA_DOMAIN = ".iam.gserviceaccount.com"
_PAGE_SIZE = 100


# the connection every command opens -----------------------------------------------------------


class Session:
    """What a command needs: the project, the output format, and a client opened on first use.

    Opening late lets a command check its own arguments first, so that a usage mistake is
    reported as one (exit 2) even where no server or credentials could be found.
    """

    def __init__(
        self,
        data_dir: str | None,
        server: str | None,
        credentials: str | None,
        project: str | None,
        output_format: str,
    ) -> None:
        try:
            settings = load_settings({"data_dir": data_dir, "project": project})
        except ValueError as exc:
            raise UsageProblem(str(exc), click.get_current_context(silent=True)) from None
        self.project = settings.project
        self.output_format = output_format
        self._data_dir = settings.data_dir
        self._credentials_dir = settings.credentials_dir
        self._server = server
        self._credentials = credentials
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            url = self._server or announced_api(self._data_dir) or DEFAULT_SERVER
            self._client = Client(url, load_credentials(self._credentials_file()))
        return self._client

    def _credentials_file(self) -> str:
        if self._credentials is not None:
            return self._credentials
        owner = self._credentials_dir / "owner.json"
        if not owner.exists():
            raise ClientError(
                f"no credentials: {owner} does not exist; pass --credentials FILE, or "
                "--data-dir DIR of the server whose owner you are"
            )
        return str(owner)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        """Print ``data`` as JSON, or the human text (built only when it is wanted)."""
        if self.output_format == "json":
            click.echo(dumps(data))
        else:
            click.echo(text() if callable(text) else text)


_CONNECTION_OPTIONS = [
    click.option("--server", metavar="URL", default=None, help="The tokensmith server's URL."),
    click.option(
        "--credentials",
        metavar="FILE",
        default=None,
        help="authorized_user or service_account JSON (default: the owner's).",
    ),
    click.option("--project", metavar="ID", default=None, help="Project (TOKENSMITH_PROJECT)."),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Data directory of the server (TOKENSMITH_DATA_DIR; default ./.tokensmith).",
    ),
    click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Output for people or for programs.",
    ),
]


def _api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Give ``func(session, ...)`` the connection options; report ClientError as exit 1."""

    @functools.wraps(func)
    def command(
        *,
        server: str | None,
        credentials: str | None,
        project: str | None,
        data_dir: str | None,
        output_format: str,
        **kwargs: Any,
    ) -> None:
        session = Session(data_dir, server, credentials, project, output_format)
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


def _account_path(session: Session, account: str) -> str:
    """API path of a service account given by email (its project read from the email) or id."""
    project = session.project
    if account.endswith(_SA_DOMAIN) and "@" in account:
        project = account.rpartition("@")[2][: -len(_SA_DOMAIN)]
    return f"/v1/projects/{project}/serviceAccounts/{urllib.parse.quote(account, safe='@')}"


# service-accounts ---------------------------------------------------------------------------


@click.group("service-accounts", cls=OneLineGroup)
def service_accounts() -> None:
    """Create, inspect, disable and delete service accounts."""


@service_accounts.command("create")
@click.argument("account_id")
@click.option("--display-name", default=None, help="A human-readable name.")
@click.option("--description", default=None, help="What the account is for.")
@_api_command
def sa_create(
    session: Session, account_id: str, display_name: str | None, description: str | None
) -> None:
    """Create ACCOUNT_ID@PROJECT.iam.gserviceaccount.com."""
    details = {"displayName": display_name, "description": description}
    created = session.client.post(
        f"/v1/projects/{session.project}/serviceAccounts",
        {
            "accountId": account_id,
            "serviceAccount": {k: v for k, v in details.items() if v is not None},
        },
    )
    session.emit(
        created,
        f"Created service account {created.get('email')} (uniqueId {created.get('uniqueId')}).",
    )


@service_accounts.command("list")
@_api_command
def sa_list(session: Session) -> None:
    """List the project's service accounts."""
    accounts: list[dict[str, Any]] = []
    params: dict[str, Any] = {"pageSize": _PAGE_SIZE}
    while True:
        page = session.client.get(f"/v1/projects/{session.project}/serviceAccounts", params=params)
        accounts.extend(page.get("accounts", []))
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]

    def text() -> str:
        if not accounts:
            return f"No service accounts in project {session.project}."
        return accounts_table(accounts)

    session.emit({"accounts": accounts}, text)


@service_accounts.command("describe")
@click.argument("account", metavar="EMAIL")
@_api_command
def sa_describe(session: Session, account: str) -> None:
    """Show a service account (by email or unique id)."""
    found = session.client.get(_account_path(session, account))
    session.emit(found, lambda: describe(found))


@service_accounts.command("disable")
@click.argument("account", metavar="EMAIL")
@_api_command
def sa_disable(session: Session, account: str) -> None:
    """Disable a service account: it can no longer get or use tokens."""
    result = session.client.post(f"{_account_path(session, account)}:disable")
    session.emit(result, f"Disabled service account {account}.")


@service_accounts.command("enable")
@click.argument("account", metavar="EMAIL")
@_api_command
def sa_enable(session: Session, account: str) -> None:
    """Enable a disabled service account."""
    result = session.client.post(f"{_account_path(session, account)}:enable")
    session.emit(result, f"Enabled service account {account}.")


@service_accounts.command("delete")
@click.argument("account", metavar="EMAIL")
@_api_command
def sa_delete(session: Session, account: str) -> None:
    """Delete a service account (undeletable for 30 days by its unique id)."""
    path = _account_path(session, account)
    unique_id = session.client.get(path).get("uniqueId", "")
    result = session.client.delete(path)
    session.emit(
        result,
        f"Deleted service account {account}. Within 30 days, "
        f"'tokensmith service-accounts undelete {unique_id}' restores it.",
    )


@service_accounts.command("undelete")
@click.argument("unique_id")
@_api_command
def sa_undelete(session: Session, unique_id: str) -> None:
    """Restore a service account deleted less than 30 days ago."""
    result = session.client.post(f"{_account_path(session, unique_id)}:undelete")
    restored = result.get("restoredAccount", {})
    session.emit(
        result,
        f"Restored service account {restored.get('email')} (uniqueId {restored.get('uniqueId')}).",
    )


# keys -----------------------------------------------------------------------------------------


@click.group("keys", cls=OneLineGroup)
def keys() -> None:
    """Create, list and delete a service account's user-managed keys."""


def _write_secret(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` readable by its owner only; never follow an existing file unless forced."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # an overwritten file keeps its mode otherwise
        out.write(data)


@keys.command("create")
@click.argument("account", metavar="EMAIL")
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the key file (mode 0600).",
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@_api_command
def keys_create(session: Session, account: str, output: Path, force: bool) -> None:
    """Create a key and write its service-account key file to --output."""
    # Check before asking for a key: a key the file cannot hold would be a stray credential.
    if output.exists() and not force:
        raise ClientError(f"{output} already exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        raise ClientError(f"cannot write {output}: {output.parent} is not a directory")
    created = session.client.post(f"{_account_path(session, account)}/keys", {})
    key_id = str(created.get("name", "")).rpartition("/")[2]
    try:
        key_file = base64.b64decode(created["privateKeyData"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise ClientError(
            f"the server returned key {key_id} without a readable privateKeyData; "
            f"delete it with 'tokensmith keys delete {account} {key_id}'"
        ) from None
    try:
        _write_secret(output, key_file, force=force)
    except OSError as exc:
        raise ClientError(
            f"created key {key_id} but cannot write {output} ({exc.strerror or exc}); "
            f"delete it with 'tokensmith keys delete {account} {key_id}'"
        ) from None
    metadata = {k: v for k, v in created.items() if k != "privateKeyData"}
    session.emit(metadata, f"Created key {key_id} for {account}, written to {output}.")


@keys.command("list")
@click.argument("account", metavar="EMAIL")
@_api_command
def keys_list(session: Session, account: str) -> None:
    """List a service account's keys (user- and system-managed)."""
    listed = session.client.get(f"{_account_path(session, account)}/keys")

    def text() -> str:
        found = listed.get("keys", [])
        return keys_table(found) if found else f"{account} has no keys."

    session.emit(listed, text)


@keys.command("delete")
@click.argument("account", metavar="EMAIL")
@click.argument("key_id")
@_api_command
def keys_delete(session: Session, account: str, key_id: str) -> None:
    """Delete a key: key files holding it stop working."""
    path = f"{_account_path(session, account)}/keys/{urllib.parse.quote(key_id, safe='')}"
    result = session.client.delete(path)
    session.emit(result, f"Deleted key {key_id} of {account}.")


# policy ---------------------------------------------------------------------------------------


@click.group("policy", cls=OneLineGroup)
def policy() -> None:
    """Read and edit IAM policies of the project or of a service account."""


_on_account = click.option(
    "--service-account",
    "account",
    metavar="EMAIL",
    default=None,
    help="Act on this service account's policy instead of the project's.",
)


def _policy_resource(session: Session, account: str | None) -> tuple[str, str]:
    """(API path, display name) of the project or service account whose policy is meant."""
    if account:
        return _account_path(session, account), f"service account {account}"
    return f"/v1/projects/{session.project}", f"project {session.project}"


@policy.command("get")
@_on_account
@_api_command
def policy_get(session: Session, account: str | None) -> None:
    """Show an IAM policy (the project's unless --service-account is given)."""
    path, shown = _policy_resource(session, account)
    current = get_iam_policy(session.client, path)
    session.emit(current, lambda: policy_text(shown, current))


@policy.command("add-binding")
@click.option("--member", required=True, help="user:EMAIL or serviceAccount:EMAIL.")
@click.option("--role", required=True, help="e.g. roles/iam.serviceAccountTokenCreator.")
@_on_account
@click.option("--condition-expression", default=None, help="CEL condition of the binding.")
@click.option("--condition-title", default=None, help="Title of the condition.")
@click.option("--condition-description", default=None, help="Description of the condition.")
@_api_command
def policy_add_binding(
    session: Session,
    member: str,
    role: str,
    account: str | None,
    condition_expression: str | None,
    condition_title: str | None,
    condition_description: str | None,
) -> None:
    """Grant --role to --member (read-modify-write with the policy's etag)."""
    condition: dict[str, str] | None = None
    if condition_expression or condition_title or condition_description:
        if not (condition_expression and condition_title):
            raise UsageProblem(
                "a condition needs both --condition-expression and --condition-title",
                click.get_current_context(silent=True),
            )
        condition = {"expression": condition_expression, "title": condition_title}
        if condition_description:
            condition["description"] = condition_description
    path, shown = _policy_resource(session, account)
    updated, changed = update_iam_policy(
        session.client, path, lambda p: with_member(p, member, role, condition)
    )
    text = (
        f"Granted {role} to {member} on {shown}."
        if changed
        else f"{member} already has {role} on {shown}; nothing changed."
    )
    session.emit(updated, text)


@policy.command("remove-binding")
@click.option("--member", required=True, help="user:EMAIL or serviceAccount:EMAIL.")
@click.option("--role", required=True, help="The role to take away (in every condition).")
@_on_account
@_api_command
def policy_remove_binding(session: Session, member: str, role: str, account: str | None) -> None:
    """Take --role away from --member (read-modify-write with the policy's etag)."""
    path, shown = _policy_resource(session, account)
    updated, changed = update_iam_policy(
        session.client, path, lambda p: without_member(p, member, role)
    )
    if not changed:
        raise ClientError(f"{member} has no binding to {role} on {shown}")
    session.emit(updated, f"Removed {role} from {member} on {shown}.")


# org-policy -----------------------------------------------------------------------------------


@click.group("org-policy", cls=OneLineGroup)
def org_policy() -> None:
    """The constraint that lets listed service accounts get 12-hour access tokens."""


@org_policy.command("allow-lifetime-extension")
@click.argument("emails", metavar="EMAIL...", nargs=-1, required=True)
@_api_command
def org_policy_allow(session: Session, emails: Sequence[str]) -> None:
    """Let these service accounts get access tokens of up to 12 hours."""
    updated, _changed = allow_lifetime_extension(session.client, session.project, emails)
    session.emit(updated, lambda: org_policy_text(LIFETIME_EXTENSION, session.project, updated))


@org_policy.command("show")
@_api_command
def org_policy_show(session: Session) -> None:
    """Show which service accounts may get access tokens of up to 12 hours."""
    current = get_org_policy(session.client, session.project)
    session.emit(current, lambda: org_policy_text(LIFETIME_EXTENSION, session.project, current))


@org_policy.command("clear")
@_api_command
def org_policy_clear(session: Session) -> None:
    """Remove the constraint: no account gets access tokens over 1 hour."""
    result = clear_org_policy(session.client, session.project)
    session.emit(result, f"Cleared {LIFETIME_EXTENSION} on project {session.project}.")


# registration ---------------------------------------------------------------------------------

_GROUPS = (service_accounts, keys, policy, org_policy)


def register(group: click.Group) -> None:
    """Attach the administrative command groups to ``group``; calling it again changes nothing.

    Where ``group`` already has a group of the same name (another module's ``keys``), the
    administrative subcommands join it instead of replacing it.
    """
    for ours in _GROUPS:
        assert ours.name is not None
        present = group.commands.get(ours.name)
        if present is None:
            group.add_command(ours)
        elif present is not ours and isinstance(present, click.Group):
            for name, command in ours.commands.items():
                present.commands.setdefault(name, command)
