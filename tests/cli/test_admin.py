"""The administration CLI driven against a real server: service accounts, keys, policies,
the org policy, and how failures read (one ``error:`` line, exit 1 or 2).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

from tokensmith.cli import admin
from tokensmith.cli.main import cli
from tokensmith.client import ClientError, load_credentials
from tokensmith.client.orgpolicy import LIFETIME_EXTENSION
from tokensmith.testing import LiveServer, free_port

pytestmark = pytest.mark.slow

admin.register(cli)

# Tests must not pick up the developer's own server through the environment.
_CLEAN_ENV: dict[str, str | None] = {"TOKENSMITH_DATA_DIR": None, "TOKENSMITH_PROJECT": None}


def run(live: LiveServer, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """``tokensmith ARGS --data-dir DATA_DIR``: server and credentials found from the data dir."""
    argv = [*args, "--data-dir", str(live.data_dir)]
    return invoke(*argv, env=env)


def invoke(*argv: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(argv), env={**_CLEAN_ENV, **(env or {})})


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def create(live: LiveServer, account_id: str, *extra: str) -> dict[str, Any]:
    created: dict[str, Any] = ok_json(
        run(live, "service-accounts", "create", account_id, *extra, "--format", "json")
    )
    return created


def email_of(account_id: str) -> str:
    return f"{account_id}@tokensmith-local.iam.gserviceaccount.com"


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


# service accounts ---------------------------------------------------------------------------


def test_create_prints_email_and_unique_id(live: LiveServer) -> None:
    """`service-accounts create` says which email and uniqueId the new account got."""
    result = run(live, "service-accounts", "create", "sa-create", "--display-name", "Builder")
    assert result.exit_code == 0, result.output
    described = ok_json(
        run(live, "service-accounts", "describe", email_of("sa-create"), "--format", "json")
    )
    assert email_of("sa-create") in result.stdout
    assert described["uniqueId"] in result.stdout
    assert described["displayName"] == "Builder"


def test_list_shows_accounts_in_text_and_json(live: LiveServer) -> None:
    """`service-accounts list` shows every account, as a table or as the API's JSON."""
    created = create(live, "sa-listed", "--description", "listed here")
    text = run(live, "service-accounts", "list")
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0].split() == ["EMAIL", "UNIQUE_ID", "DISABLED", "DISPLAY_NAME"]
    row = next(line for line in text.stdout.splitlines() if email_of("sa-listed") in line)
    assert row.split()[:3] == [email_of("sa-listed"), created["uniqueId"], "no"]
    listed = ok_json(run(live, "service-accounts", "list", "--format", "json"))
    assert created in listed["accounts"]


def test_describe_shows_the_account_fields(live: LiveServer) -> None:
    """`service-accounts describe` prints the account as key: value lines."""
    created = create(live, "sa-described", "--display-name", "Shown", "--description", "Why")
    result = run(live, "service-accounts", "describe", created["email"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"email: {created['email']}" in lines
    assert f"uniqueId: {created['uniqueId']}" in lines
    assert "displayName: Shown" in lines
    assert "description: Why" in lines


def test_disable_then_enable(live: LiveServer) -> None:
    """`disable` marks the account disabled and `enable` clears it again."""
    email = create(live, "sa-toggled")["email"]
    disabled = run(live, "service-accounts", "disable", email)
    assert disabled.exit_code == 0, disabled.output
    assert disabled.stdout == f"Disabled service account {email}.\n"
    assert ok_json(run(live, "service-accounts", "describe", email, "--format", "json"))["disabled"]
    assert run(live, "service-accounts", "enable", email).exit_code == 0
    described = ok_json(run(live, "service-accounts", "describe", email, "--format", "json"))
    assert "disabled" not in described


def test_delete_then_undelete_by_unique_id(live: LiveServer) -> None:
    """A deleted account is gone until `undelete UNIQUE_ID`, which the delete message names."""
    created = create(live, "sa-deleted")
    deleted = run(live, "service-accounts", "delete", created["email"])
    assert deleted.exit_code == 0, deleted.output
    assert f"undelete {created['uniqueId']}" in deleted.stdout
    gone = run(live, "service-accounts", "describe", created["email"])
    assert gone.exit_code == 1
    assert one_error_line(gone) == (
        f"error: NOT_FOUND (404): Unknown service account: {created['email']}"
    )
    restored = run(live, "service-accounts", "undelete", created["uniqueId"])
    assert restored.exit_code == 0, restored.output
    assert created["email"] in restored.stdout
    again = ok_json(run(live, "service-accounts", "describe", created["email"], "--format", "json"))
    assert again["uniqueId"] == created["uniqueId"]


# keys ---------------------------------------------------------------------------------------


def test_keys_create_writes_a_private_usable_key_file(live: LiveServer, tmp_path: Path) -> None:
    """`keys create` writes a 0600 key file whose key buys the account an access token."""
    email = create(live, "sa-keyed")["email"]
    path = tmp_path / "key.json"
    result = run(live, "keys", "create", email, "--output", str(path))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key_file = json.loads(path.read_text())
    assert key_file["type"] == "service_account"
    assert key_file["client_email"] == email
    assert key_file["private_key_id"] in result.stdout
    assert "PRIVATE KEY" not in result.stdout
    with httpx.Client() as http:
        token = load_credentials(path).token(http)
    assert token.count(".") == 2  # a JWT access token, as the server issues them
    listed = run(live, "keys", "list", email)
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if key_file["private_key_id"] in line)
    assert row.split()[1] == "USER_MANAGED"


def test_keys_create_refuses_to_overwrite_without_force(live: LiveServer, tmp_path: Path) -> None:
    """An existing --output file is kept (exit 1) unless --force, which makes it 0600."""
    email = create(live, "sa-overwrite")["email"]
    path = tmp_path / "key.json"
    path.write_text("precious")
    path.chmod(0o644)
    refused = run(live, "keys", "create", email, "--output", str(path))
    assert refused.exit_code == 1
    assert one_error_line(refused) == f"error: {path} already exists; pass --force to overwrite it"
    assert path.read_text() == "precious"
    listed = ok_json(run(live, "keys", "list", email, "--format", "json"))
    assert [k for k in listed.get("keys", []) if k["keyType"] == "USER_MANAGED"] == []
    forced = ok_json(
        run(live, "keys", "create", email, "--output", str(path), "--force", "--format", "json")
    )
    key_file = json.loads(path.read_text())
    assert key_file["client_email"] == email
    assert forced["name"].endswith(f"/keys/{key_file['private_key_id']}")
    assert "privateKeyData" not in forced  # the private key goes to the file only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_delete_makes_the_key_file_useless(live: LiveServer, tmp_path: Path) -> None:
    """After `keys delete`, the key is no longer listed and its file buys no token."""
    email = create(live, "sa-unkeyed")["email"]
    path = tmp_path / "key.json"
    assert run(live, "keys", "create", email, "-o", str(path)).exit_code == 0
    key_id = json.loads(path.read_text())["private_key_id"]
    deleted = run(live, "keys", "delete", email, key_id)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout == f"Deleted key {key_id} of {email}.\n"
    assert key_id not in run(live, "keys", "list", email).stdout
    with httpx.Client() as http, pytest.raises(ClientError) as caught:
        load_credentials(path).token(http)
    assert caught.value.status == "invalid_grant"


# IAM policies -------------------------------------------------------------------------------


def bindings_of(policy: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [b for b in policy.get("bindings", []) if b["role"] == role]


def test_project_binding_added_and_removed(live: LiveServer) -> None:
    """`policy add-binding` shows up in `policy get`; `remove-binding` takes it out again."""
    member = f"serviceAccount:{create(live, 'sa-bound')['email']}"
    added = run(live, "policy", "add-binding", "--member", member, "--role", "roles/viewer")
    assert added.exit_code == 0, added.output
    assert added.stdout == f"Granted roles/viewer to {member} on project tokensmith-local.\n"
    shown = run(live, "policy", "get")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[lines.index("  roles/viewer") + 1 :].count(f"    {member}") == 1
    policy = ok_json(run(live, "policy", "get", "--format", "json"))
    assert any(member in b["members"] for b in bindings_of(policy, "roles/viewer"))

    removed = run(live, "policy", "remove-binding", "--member", member, "--role", "roles/viewer")
    assert removed.exit_code == 0, removed.output
    policy = ok_json(run(live, "policy", "get", "--format", "json"))
    assert not any(member in b["members"] for b in bindings_of(policy, "roles/viewer"))
    again = run(live, "policy", "remove-binding", "--member", member, "--role", "roles/viewer")
    assert again.exit_code == 1
    assert one_error_line(again) == (
        f"error: {member} has no binding to roles/viewer on project tokensmith-local"
    )


def test_conditional_binding_makes_a_version_3_policy(live: LiveServer) -> None:
    """A binding with --condition-* is stored with its condition and read back at version 3."""
    member = f"serviceAccount:{create(live, 'sa-conditional')['email']}"
    expression = 'request.time < timestamp("2099-01-01T00:00:00Z")'
    result = run(
        live,
        "policy",
        "add-binding",
        "--member",
        member,
        "--role",
        "roles/iam.serviceAccountUser",
        "--condition-expression",
        expression,
        "--condition-title",
        "until-2099",
        "--format",
        "json",
    )
    policy = ok_json(result)
    assert policy["version"] == 3
    [binding] = [
        b for b in bindings_of(policy, "roles/iam.serviceAccountUser") if member in b["members"]
    ]
    assert binding["condition"] == {"expression": expression, "title": "until-2099"}
    assert f"if 'until-2099': {expression}" in run(live, "policy", "get").stdout
    assert (
        run(
            live,
            "policy",
            "remove-binding",
            "--member",
            member,
            "--role",
            "roles/iam.serviceAccountUser",
        ).exit_code
        == 0
    )


def test_service_account_policy_grants_its_own_key_access(live: LiveServer, tmp_path: Path) -> None:
    """A binding on an account's policy lets that account's key file describe it, nothing more."""
    email = create(live, "sa-self")["email"]
    path = tmp_path / "self.json"
    assert run(live, "keys", "create", email, "-o", str(path)).exit_code == 0
    added = run(
        live,
        "policy",
        "add-binding",
        "--service-account",
        email,
        "--member",
        f"serviceAccount:{email}",
        "--role",
        "roles/viewer",
    )
    assert added.exit_code == 0, added.output
    account_policy = ok_json(
        run(live, "policy", "get", "--service-account", email, "--format", "json")
    )
    assert bindings_of(account_policy, "roles/viewer") == [
        {"role": "roles/viewer", "members": [f"serviceAccount:{email}"]}
    ]
    project_policy = ok_json(run(live, "policy", "get", "--format", "json"))
    assert f"serviceAccount:{email}" not in json.dumps(project_policy)
    described = run(live, "service-accounts", "describe", email, "--credentials", str(path))
    assert described.exit_code == 0, described.output
    assert f"email: {email}" in described.stdout.splitlines()


# org policy ---------------------------------------------------------------------------------


def test_allow_lifetime_extension_merges_and_shows(live: LiveServer) -> None:
    """Allowed accounts accumulate across calls, `show` lists them, `clear` removes them all."""
    first, second = email_of("sa-long-a"), email_of("sa-long-b")
    assert run(live, "org-policy", "allow-lifetime-extension", first).exit_code == 0
    both = run(live, "org-policy", "allow-lifetime-extension", second, first, "--format", "json")
    policy = ok_json(both)
    assert policy["constraint"] == LIFETIME_EXTENSION
    assert policy["listPolicy"]["allowedValues"] == [first, second]
    shown = run(live, "org-policy", "show")
    assert shown.exit_code == 0, shown.output
    assert f"  allowed: {first}, {second}" in shown.stdout.splitlines()

    cleared = run(live, "org-policy", "clear")
    assert cleared.exit_code == 0, cleared.output
    assert "listPolicy" not in ok_json(run(live, "org-policy", "show", "--format", "json"))
    assert "not set" in run(live, "org-policy", "show").stdout


# failures -----------------------------------------------------------------------------------


def test_denied_call_is_one_error_line_and_exit_1(live: LiveServer, tmp_path: Path) -> None:
    """A key file without any role gets Google's PERMISSION_DENIED text on one line, exit 1."""
    email = create(live, "sa-powerless")["email"]
    path = tmp_path / "powerless.json"
    assert run(live, "keys", "create", email, "-o", str(path)).exit_code == 0
    result = run(
        live, "service-accounts", "describe", email_of("sa-create"), "--credentials", str(path)
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert one_error_line(result) == (
        "error: PERMISSION_DENIED (403): Permission 'iam.serviceAccounts.get' denied on "
        "resource (or it may not exist)."
    )


def test_unreachable_server_is_a_clear_error(live: LiveServer) -> None:
    """A server nobody listens on is named in a one-line error, exit 1."""
    url = f"http://127.0.0.1:{free_port()}"
    result = run(live, "service-accounts", "list", "--server", url)
    assert result.exit_code == 1
    assert one_error_line(result).startswith(f"error: cannot reach tokensmith at {url}: ")


def test_missing_owner_credentials_is_a_clear_error(tmp_path: Path) -> None:
    """Without --credentials and without an owner file in the data dir, the error says so."""
    result = invoke("service-accounts", "list", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    line = one_error_line(result)
    assert f"{tmp_path / 'credentials' / 'owner.json'} does not exist" in line
    assert "--credentials FILE" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "create", "x@p.iam.gserviceaccount.com"], "Missing option '--output'"),
        (["service-accounts", "describe"], "Missing argument 'EMAIL'"),
        (["service-accounts", "list", "--format", "xml"], "Invalid value for '--format'"),
        (["service-accounts", "frobnicate"], "No such command 'frobnicate'"),
        (
            [
                "policy",
                "add-binding",
                "--member",
                "user:a@b.c",
                "--role",
                "roles/viewer",
                "--condition-title",
                "t",
            ],
            "a condition needs both --condition-expression and --condition-title",
        ),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    """Command-line mistakes are one `error:` line naming the problem, exit status 2."""
    result = invoke(*argv, "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert message in line
    assert line.endswith("--help'.")


# defaults and wiring ------------------------------------------------------------------------


def test_data_dir_and_project_come_from_the_environment(live: LiveServer) -> None:
    """TOKENSMITH_DATA_DIR finds the server and owner; TOKENSMITH_PROJECT picks the project."""
    env = {"TOKENSMITH_DATA_DIR": str(live.data_dir)}
    assert invoke("service-accounts", "list", env=env).exit_code == 0
    other = invoke("service-accounts", "list", env={**env, "TOKENSMITH_PROJECT": "elsewhere"})
    assert other.exit_code == 1
    assert one_error_line(other) == (
        "error: PERMISSION_DENIED (403): Permission 'iam.serviceAccounts.list' denied on "
        "resource (or it may not exist)."
    )


def test_python_m_tokensmith_has_the_admin_commands(live: LiveServer) -> None:
    """The installed entry point registers the admin groups: a real process lists accounts."""
    create(live, "sa-subprocess")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensmith",
            "service-accounts",
            "list",
            "--data-dir",
            str(live.data_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert email_of("sa-subprocess") in done.stdout


def test_register_is_idempotent() -> None:
    """Registering the admin commands twice leaves one of each."""
    before = dict(cli.commands)
    admin.register(cli)
    assert cli.commands == before
    assert {"service-accounts", "keys", "policy", "org-policy"} <= set(cli.commands)


def test_register_joins_an_existing_group_of_the_same_name() -> None:
    """A `keys` group another module registered first gains the admin subcommands."""
    group = click.Group("tokensmith")
    other_keys = click.Group("keys")
    other_keys.add_command(click.Command("rotate"))
    group.add_command(other_keys)
    admin.register(group)
    assert group.commands["keys"] is other_keys
    assert {"rotate", "create", "list", "delete"} <= set(other_keys.commands)
    assert "service-accounts" in group.commands
