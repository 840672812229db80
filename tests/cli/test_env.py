"""``tokensmith env``: which variables it prints for the parts of a server that run, in which
syntax (each read back by the shell or parser that would consume it), and ``--as`` key files
against a real server."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from tokensmith.cli import env as env_command
from tokensmith.cli.shellenv import (
    Comment,
    Credentials,
    Metadata,
    Note,
    Variable,
    choose_metadata,
    environment,
    render,
)
from tokensmith.testing import LiveServer, owner_access_token

API = "http://127.0.0.1:8080"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
# What a shell may hold that must survive quoting: quotes, blanks, $, backslashes, newlines.
AWKWARD = [
    "/plain/path.json",
    "it's",
    'say "hi"',
    "two  spaces\tand a tab",
    "$HOME and `date` and $(id)",
    "back\\slash\\",
    "line one\nline two",
    "ünïcødé ✓",
    "",
]
_CLEAN_ENV: dict[str, str | None] = {"TOKENSMITH_DATA_DIR": None}


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("tokensmith")
    env_command.register(group)
    return group


def invoke(cli: click.Group, *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, ["env", *args], env={**_CLEAN_ENV, **(env or {})})


def write_server(
    data_dir: Path,
    *,
    metadata: bool = True,
    proxy: bool = True,
    roots: bool = True,
    owner: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A ``server.json`` (this process as the server) with the parts asked for, and its files."""
    data_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"pid": os.getpid(), "api": API, "token_uri": f"{API}/token"}
    if metadata:
        record["metadata"] = [
            {
                "url": "http://127.0.0.1:8081",
                "address": "127.0.0.1:8081",
                "name": "instance-1",
                "service_account": "1-compute@developer.gserviceaccount.com",
            },
            {
                "url": "http://10.1.2.3:8082",
                "address": "10.1.2.3:8082",
                "name": "web",
                "service_account": "web@p-roject.iam.gserviceaccount.com",
            },
        ]
    if proxy:
        ca_dir = data_dir / "ca"
        ca_dir.mkdir(exist_ok=True)
        (ca_dir / "ca.pem").write_text(CERT)
        (ca_dir / "bundle.pem").write_text(CERT * (3 if roots else 1))
        record["proxy"] = {
            "url": "http://127.0.0.1:8443",
            "ca": str(ca_dir / "ca.pem"),
            "ca_bundle": str(ca_dir / "bundle.pem"),
            "hosts": "iamcredentials.googleapis.com,oauth2.googleapis.com",
        }
    if owner:
        (data_dir / "credentials").mkdir(exist_ok=True)
        (data_dir / "credentials" / "owner.json").write_text('{"type": "authorized_user"}')
    record.update(fields)
    (data_dir / "server.json").write_text(json.dumps(record))
    return record


def as_json(result: Result) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    values: dict[str, str] = json.loads(result.stdout)
    return values


def sourced(script: str, shell: str = "bash") -> dict[str, str]:
    """The environment a POSIX shell has after running ``script`` (as ``eval`` would)."""
    program = f"{script}\n{shlex.quote(sys.executable)} -c " + shlex.quote(
        "import json, os; print(json.dumps(dict(os.environ)))"
    )
    completed = subprocess.run(
        [shell, "-c", program],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    values: dict[str, str] = json.loads(completed.stdout)
    return values


# --- what it prints for each part ----------------------------------------------------------


def test_everything_running_prints_every_clients_variables(
    cli: click.Group, tmp_path: Path
) -> None:
    """With a metadata server and the proxy: credentials, gcloud, metadata and proxy variables."""
    write_server(tmp_path)
    data_dir = tmp_path.resolve()
    assert as_json(invoke(cli, "--data-dir", str(tmp_path), "--format", "json")) == {
        "GOOGLE_APPLICATION_CREDENTIALS": str(data_dir / "credentials" / "owner.json"),
        "CLOUDSDK_AUTH_TOKEN_HOST": f"{API}/token",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS": f"{API}/",
        "GCE_METADATA_HOST": "127.0.0.1:8081",
        "GCE_METADATA_IP": "127.0.0.1:8081",
        "GCE_METADATA_ROOT": "127.0.0.1:8081",
        "HTTPS_PROXY": "http://127.0.0.1:8443",
        "https_proxy": "http://127.0.0.1:8443",
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "no_proxy": "127.0.0.1,localhost,::1",
        "REQUESTS_CA_BUNDLE": str(data_dir / "ca" / "bundle.pem"),
        "SSL_CERT_FILE": str(data_dir / "ca" / "bundle.pem"),
        "NODE_EXTRA_CA_CERTS": str(data_dir / "ca" / "ca.pem"),
        "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE": str(data_dir / "ca" / "bundle.pem"),
    }


def test_gcloud_proxy_properties_are_never_set(cli: click.Group, tmp_path: Path) -> None:
    """gcloud's proxy/* properties would send loopback calls to the proxy: env leaves them out."""
    write_server(tmp_path)
    values = as_json(invoke(cli, "--data-dir", str(tmp_path), "--format", "json"))
    assert not [name for name in values if name.startswith("CLOUDSDK_PROXY")]


@pytest.mark.parametrize(
    ("parts", "absent", "flag"),
    [
        (
            {"metadata": False},
            {"GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"},
            "--metadata-port",
        ),
        (
            {"proxy": False},
            {
                "HTTPS_PROXY",
                "https_proxy",
                "NO_PROXY",
                "no_proxy",
                "REQUESTS_CA_BUNDLE",
                "SSL_CERT_FILE",
                "NODE_EXTRA_CA_CERTS",
                "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
            },
            "--proxy-port",
        ),
    ],
    ids=["no-metadata", "no-proxy"],
)
def test_a_part_not_running_is_left_out_with_a_note(
    cli: click.Group, tmp_path: Path, parts: dict[str, bool], absent: set[str], flag: str
) -> None:
    """Variables of a stopped part are omitted; shell and fish say which flag starts it."""
    write_server(tmp_path, **parts)
    shell = invoke(cli, "--data-dir", str(tmp_path))
    values = sourced(shell.stdout)
    assert not absent & set(values)
    assert "CLOUDSDK_AUTH_TOKEN_HOST" in values
    notes = [line for line in shell.stdout.splitlines() if line.startswith("# note:")]
    assert len(notes) == 1
    assert flag in notes[0]
    fish = invoke(cli, "--data-dir", str(tmp_path), "--format", "fish").stdout
    assert [line for line in fish.splitlines() if line.startswith("# note:")] == notes
    for output_format in ("dotenv", "json"):
        printed = invoke(cli, "--data-dir", str(tmp_path), "--format", output_format).stdout
        assert "#" not in printed
        assert not any(name in printed for name in absent)


def test_ssl_cert_file_only_with_system_roots_in_the_bundle(
    cli: click.Group, tmp_path: Path
) -> None:
    """A bundle holding the CA alone keeps SSL_CERT_FILE unset (a note says why), the rest set."""
    write_server(tmp_path, roots=False)
    result = invoke(cli, "--data-dir", str(tmp_path))
    values = sourced(result.stdout)
    assert "SSL_CERT_FILE" not in values
    assert values["REQUESTS_CA_BUNDLE"].endswith("bundle.pem")
    assert "# note: SSL_CERT_FILE not set" in result.stdout


def test_no_proxy_keeps_a_remote_metadata_server_and_api_direct(tmp_path: Path) -> None:
    """NO_PROXY: loopback, then the metadata server's and the API's hosts (IPv6 unbracketed)."""
    record = write_server(tmp_path, api="http://tokensmith.internal:8080")
    record["proxy"]["url"] = "http://[::1]:8443"
    lines = environment(
        record,
        credentials=Note("none"),
        metadata=choose_metadata(record, address="http://[fd00::7]:8081/"),
    )
    values = {line.name: line.value for line in lines if isinstance(line, Variable)}
    assert values["NO_PROXY"] == "127.0.0.1,localhost,::1,fd00::7,tokensmith.internal"
    assert values["no_proxy"] == values["NO_PROXY"]
    assert values["GCE_METADATA_HOST"] == "[fd00::7]:8081"
    assert values["HTTPS_PROXY"] == "http://[::1]:8443"


# --- choosing the metadata server and the credentials ---------------------------------------


def test_instance_is_chosen_by_name_or_address(cli: click.Group, tmp_path: Path) -> None:
    """--instance picks one of several metadata listeners; an unknown one lists the names."""
    write_server(tmp_path)
    by_name = as_json(
        invoke(cli, "--data-dir", str(tmp_path), "--instance", "web", "--format", "json")
    )
    assert by_name["GCE_METADATA_ROOT"] == "10.1.2.3:8082"
    assert by_name["NO_PROXY"] == "127.0.0.1,localhost,::1,10.1.2.3"
    by_address = invoke(cli, "--data-dir", str(tmp_path), "--instance", "10.1.2.3:8082")
    assert sourced(by_address.stdout)["GCE_METADATA_IP"] == "10.1.2.3:8082"
    unknown = invoke(cli, "--data-dir", str(tmp_path), "--instance", "db")
    assert unknown.exit_code == 1
    assert "no metadata instance 'db' (instances: instance-1, web)" in unknown.output
    assert unknown.stdout == ""


def test_data_dir_comes_from_the_environment(cli: click.Group, tmp_path: Path) -> None:
    """Without --data-dir, env uses TOKENSMITH_DATA_DIR like every other command."""
    write_server(tmp_path)
    result = invoke(cli, "--format", "json", env={"TOKENSMITH_DATA_DIR": str(tmp_path)})
    assert as_json(result)["GCE_METADATA_HOST"] == "127.0.0.1:8081"


def test_agent_address_needs_no_server(cli: click.Group, tmp_path: Path) -> None:
    """--metadata HOST:PORT with no server running prints the metadata variables alone."""
    result = invoke(cli, "--data-dir", str(tmp_path), "--metadata", "http://127.0.0.1:9999/")
    assert result.exit_code == 0, result.output
    values = sourced(result.stdout)
    assert {k: v for k, v in values.items() if k.startswith("GCE_")} == {
        "GCE_METADATA_HOST": "127.0.0.1:9999",
        "GCE_METADATA_IP": "127.0.0.1:9999",
        "GCE_METADATA_ROOT": "127.0.0.1:9999",
    }
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in values


def test_agent_address_replaces_the_servers_own_listener(cli: click.Group, tmp_path: Path) -> None:
    """With a server running, --metadata points the metadata variables at the agent instead."""
    write_server(tmp_path)
    values = as_json(
        invoke(cli, "--data-dir", str(tmp_path), "--metadata", "127.0.0.1:9999", "--format", "json")
    )
    assert values["GCE_METADATA_ROOT"] == "127.0.0.1:9999"
    assert values["CLOUDSDK_AUTH_TOKEN_HOST"] == f"{API}/token"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (None, "no tokensmith server is running on"),
        ({"pid": 2**22 + 12345}, "no longer running"),
    ],
    ids=["no-server", "stale"],
)
def test_no_running_server_is_an_error_that_prints_nothing(
    cli: click.Group, tmp_path: Path, fields: dict[str, Any] | None, message: str
) -> None:
    """No server.json, or one of a dead process: exit 1, the reason, and nothing to eval."""
    if fields is not None:
        write_server(tmp_path, **fields)
    result = invoke(cli, "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert message in result.output
    assert result.stdout == ""


def test_credentials_file_points_at_another_principal(cli: click.Group, tmp_path: Path) -> None:
    """--credentials FILE sets GOOGLE_APPLICATION_CREDENTIALS to that file, made absolute."""
    write_server(tmp_path / "data")
    key = tmp_path / "someone.json"
    key.write_text('{"type": "service_account"}')
    with contextlib.chdir(tmp_path):
        given = ("--data-dir", str(tmp_path / "data"), "--credentials", "someone.json")
        values = as_json(invoke(cli, *given, "--format", "json"))
        missing = invoke(cli, "--data-dir", str(tmp_path / "data"), "--credentials", "nope.json")
    assert values["GOOGLE_APPLICATION_CREDENTIALS"] == str(key.resolve())
    assert missing.exit_code == 2
    assert "nope.json is not a file" in missing.output


@pytest.mark.parametrize(
    "flags",
    [
        ("--as", "a@p.iam.gserviceaccount.com", "--credentials", "x.json"),
        ("--as", "a@p.iam.gserviceaccount.com", "--no-credentials"),
        ("--credentials", "x.json", "--no-credentials"),
    ],
    ids=["as+credentials", "as+none", "credentials+none"],
)
def test_one_source_of_credentials_at_most(
    cli: click.Group, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """--as, --credentials and --no-credentials exclude each other: a usage error, exit 2."""
    write_server(tmp_path)
    result = invoke(cli, "--data-dir", str(tmp_path), *flags)
    assert result.exit_code == 2
    assert "exclude each other" in result.output


@pytest.mark.parametrize(
    ("owner", "flags", "why"),
    [(True, ("--no-credentials",), "--no-credentials"), (False, (), "no owner credentials")],
    ids=["no-credentials", "owner-file-gone"],
)
def test_without_credentials_the_variable_is_left_out_with_a_note(
    cli: click.Group, tmp_path: Path, owner: bool, flags: tuple[str, ...], why: str
) -> None:
    """--no-credentials, or an owner file moved away: no GOOGLE_APPLICATION_CREDENTIALS."""
    write_server(tmp_path, owner=owner)
    result = invoke(cli, "--data-dir", str(tmp_path), *flags)
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in sourced(result.stdout)
    assert any(
        line.startswith("# note: GOOGLE_APPLICATION_CREDENTIALS left out") and why in line
        for line in result.stdout.splitlines()
    )


# --- the four syntaxes ------------------------------------------------------------------------


def awkward_lines() -> list[Comment | Note | Variable]:
    return [
        Comment("values a shell would mangle"),
        *(Variable(f"VALUE_{i}", value) for i, value in enumerate(AWKWARD)),
    ]


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_shell_format_survives_eval(shell: str, tmp_path: Path) -> None:
    """Each value, however awkward, reaches bash and dash byte for byte through eval."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    printed = tmp_path / "printed.sh"
    printed.write_text(render(awkward_lines(), "shell") + "\n")
    values = sourced(f'eval "$(cat {shlex.quote(str(printed))})"', shell)
    assert [values[f"VALUE_{i}"] for i in range(len(AWKWARD))] == AWKWARD


def test_shell_format_is_export_lines() -> None:
    """Every line is a comment or `export NAME=VALUE`, values single-quoted where they need it."""
    out = render([Comment("c"), Variable("A", "plain:1"), Variable("B", "it's")], "shell")
    assert out.splitlines() == ["# c", "export A=plain:1", "export B='it'\"'\"'s'"]


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("/p/owner.json", "'/p/owner.json'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("$HOME (x)", "'$HOME (x)'"),
    ],
)
def test_fish_format_quotes_for_fish(value: str, quoted: str) -> None:
    """fish: `set -gx NAME 'VALUE'`, with \\ and \\' the only escapes inside single quotes."""
    assert render([Variable("K", value)], "fish") == f"set -gx K {quoted}"


def test_dotenv_format_reads_back_with_python_dotenv() -> None:
    """dotenv: `NAME="VALUE"` lines only, which python-dotenv reads back to the same values."""
    dotenv = pytest.importorskip("dotenv")
    out = render([Note("not here"), *awkward_lines()], "dotenv")
    assert all(line.startswith("VALUE_") for line in out.splitlines())
    values = dotenv.dotenv_values(stream=io.StringIO(out), interpolate=False)
    assert [values[f"VALUE_{i}"] for i in range(len(AWKWARD))] == AWKWARD


def test_json_format_is_one_object_of_the_variables() -> None:
    """json: one object NAME → VALUE in order, nothing else."""
    out = render([Note("not here"), *awkward_lines()], "json")
    assert json.loads(out) == {f"VALUE_{i}": value for i, value in enumerate(AWKWARD)}


def test_a_newline_in_a_comment_cannot_become_a_command(tmp_path: Path) -> None:
    """A name in server.json with a newline stays inside its comment line when eval'd."""
    record = write_server(tmp_path)
    record["metadata"][0]["name"] = "x\nexport INJECTED=yes"
    lines = environment(
        record, credentials=Note("n\nexport ALSO=yes"), metadata=choose_metadata(record)
    )
    for output_format in ("shell", "fish"):
        out = render(lines, output_format)
        assert all(line.startswith(("#", "export ", "set -gx ")) for line in out.splitlines())
    values = sourced(render(lines, "shell"))
    assert "INJECTED" not in values
    assert "ALSO" not in values


def test_environment_lists_credentials_first_and_metadata_from_the_chosen_listener() -> None:
    """The pure table: GOOGLE_APPLICATION_CREDENTIALS, gcloud's two, then the metadata three."""
    record = {"api": API, "token_uri": f"{API}/token"}
    lines = environment(
        record,
        credentials=Credentials(Path("/k.json"), "k"),
        metadata=Metadata("127.0.0.1:1", "m"),
    )
    names = [line.name for line in lines if isinstance(line, Variable)]
    assert names == [
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CLOUDSDK_AUTH_TOKEN_HOST",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS",
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
        "GCE_METADATA_ROOT",
    ]
    notes = [line.text for line in lines if isinstance(line, Note)]
    assert len(notes) == 1
    assert "--proxy-port" in notes[0]


# --- --as against a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def account(live: LiveServer) -> str:
    """A service account of the live server, made by its owner."""
    with owner_client(live) as owner:
        response = owner.post(
            "/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "env-as"}
        )
    assert response.status_code == 200, response.text
    return str(response.json()["email"])


def owner_client(live: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=live.url,
        headers={"Authorization": f"Bearer {owner_access_token(live)}"},
        trust_env=False,
        timeout=10,
    )


def key_file_for(cli: click.Group, live: LiveServer, email: str) -> Path:
    values = as_json(
        invoke(cli, "--data-dir", str(live.data_dir), "--as", email, "--format", "json")
    )
    return Path(values["GOOGLE_APPLICATION_CREDENTIALS"])


@pytest.mark.slow
def test_as_writes_a_private_key_file_whose_token_is_the_accounts(
    cli: click.Group, live: LiveServer, account: str
) -> None:
    """--as EMAIL: DATA_DIR/credentials/EMAIL.json (0600), a key file google-auth turns into
    a token the server knows as EMAIL."""
    path = key_file_for(cli, live, account)
    assert path == (live.data_dir / "credentials" / f"{account}.json").resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = service_account.Credentials.from_service_account_file(
        str(path), scopes=[CLOUD_PLATFORM]
    )
    creds.refresh(Request())
    info = httpx.get(
        f"{live.url}/tokeninfo", params={"access_token": creds.token}, trust_env=False
    ).json()
    assert info["email"] == account


@pytest.mark.slow
def test_as_reuses_its_key_until_the_server_drops_it(
    cli: click.Group, live: LiveServer, account: str
) -> None:
    """A second --as keeps the same key; once that key is deleted, a new one replaces it."""
    first = json.loads(key_file_for(cli, live, account).read_text())
    again = json.loads(key_file_for(cli, live, account).read_text())
    assert again["private_key_id"] == first["private_key_id"]
    with owner_client(live) as owner:
        deleted = owner.delete(
            f"/v1/projects/-/serviceAccounts/{account}/keys/{first['private_key_id']}"
        )
        assert deleted.status_code == 200, deleted.text
        replaced = json.loads(key_file_for(cli, live, account).read_text())
        listed = owner.get(
            f"/v1/projects/-/serviceAccounts/{account}/keys",
            params={"keyTypes": "USER_MANAGED"},
        ).json()
    assert replaced["private_key_id"] != first["private_key_id"]
    key_ids = {key["name"].rpartition("/")[2] for key in listed.get("keys", [])}
    assert key_ids == {replaced["private_key_id"]}


@pytest.mark.slow
def test_as_an_unknown_account_is_an_error(cli: click.Group, live: LiveServer) -> None:
    """--as an account the server does not have: exit 1 naming it, nothing printed to eval."""
    email = "nobody@tokensmith-local.iam.gserviceaccount.com"
    result = invoke(cli, "--data-dir", str(live.data_dir), "--as", email)
    assert result.exit_code == 1
    assert f"cannot get a key for {email}" in result.output
    assert result.stdout == ""
    assert not (live.data_dir / "credentials" / f"{email}.json").exists()


def test_a_failed_key_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key files are replaced atomically (0600): a failure keeps the old file and no debris."""
    path = tmp_path / "k.json"
    path.write_text("old")

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", fail)
        with pytest.raises(OSError, match="disk full"):
            env_command._write_private(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]
    env_command._write_private(path, b"new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
