"""``tokensmith auth`` against a real server: gcloud's print-access-token and
print-identity-token (own credentials, impersonation, delegation chains), and
application-default files that google-auth loads and refreshes."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth
import httpx
import pytest
from click.testing import CliRunner, Result
from google.auth import impersonated_credentials
from google.auth.transport.requests import Request
from google.oauth2 import credentials as user_credentials
from google.oauth2 import id_token, service_account

from tests.conftest import require_or_skip
from tests.proxy.conftest import POLICY, ProxyThread, run_google_auth, signed_by_one_of
from tokensmith.cli import auth
from tokensmith.cli.auth import parse_chain
from tokensmith.cli.main import cli
from tokensmith.proxy import LocalCA
from tokensmith.testing import LiveServer, free_port, owner_access_token

pytestmark = pytest.mark.slow

auth.register(cli)

PROJECT = "tokensmith-local"
AUDIENCE = "https://backend.example.test/"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
# Tests must not pick up the developer's own server through the environment.
_CLEAN_ENV: dict[str, str | None] = {
    "TOKENSMITH_DATA_DIR": None,
    "GOOGLE_APPLICATION_CREDENTIALS": None,
}


def run(live: LiveServer, *args: str) -> Result:
    """``tokensmith auth ARGS --data-dir DATA_DIR``: server and owner found from the data dir."""
    argv = ["auth", *args, "--data-dir", str(live.data_dir)]
    return CliRunner().invoke(cli, argv, env=_CLEAN_ENV)


def printed(result: Result) -> str:
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def one_error_line(result: Result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


class Accounts:
    """Service accounts set up by the owner: a target it may impersonate directly, and a
    chain owner → d1 → d2 → chained where only each next hop is granted."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.owner_email = json.loads(live.owner_credentials.read_text())["account"]
        self.http = httpx.Client(
            base_url=live.url,
            headers={"Authorization": f"Bearer {owner_access_token(live)}"},
            timeout=10,
            trust_env=False,
        )
        self.target = self.create("auth-target")
        self.d1 = self.create("auth-delegate-1")
        self.d2 = self.create("auth-delegate-2")
        self.chained = self.create("auth-chained")
        self.grant(self.target, f"user:{self.owner_email}")
        self.grant(self.d1, f"user:{self.owner_email}")
        self.grant(self.d2, f"serviceAccount:{self.d1}")
        self.grant(self.chained, f"serviceAccount:{self.d2}")

    def call(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body)
        assert response.status_code == 200, f"{path}: {response.text}"
        return response.json()

    def create(self, account_id: str) -> str:
        created = self.call(f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": account_id})
        return str(created["email"])

    def unique_id(self, email: str) -> str:
        response = self.http.get(f"/v1/projects/{PROJECT}/serviceAccounts/{email}")
        return str(response.json()["uniqueId"])

    def grant(self, email: str, member: str) -> None:
        resource = f"/v1/projects/{PROJECT}/serviceAccounts/{email}"
        policy = self.call(f"{resource}:getIamPolicy", {})
        policy.setdefault("bindings", []).append({"role": TOKEN_CREATOR, "members": [member]})
        self.call(f"{resource}:setIamPolicy", {"policy": policy})

    def key_file(self, email: str, directory: Path) -> Path:
        created = self.call(f"/v1/projects/-/serviceAccounts/{email}/keys", {})
        path = directory / f"{email.partition('@')[0]}.json"
        path.write_bytes(base64.b64decode(created["privateKeyData"]))
        path.chmod(0o600)
        return path

    def tokeninfo(self, access_token: str) -> dict[str, Any]:
        response = self.http.get("/tokeninfo", params={"access_token": access_token})
        assert response.status_code == 200, response.text
        info: dict[str, Any] = response.json()
        return info


@pytest.fixture(scope="module")
def accounts(live: LiveServer) -> Iterator[Accounts]:
    setup = Accounts(live)
    yield setup
    setup.http.close()


def verified(live: LiveServer, token: str, audience: str) -> dict[str, Any]:
    """The claims of ``token`` after google-auth checked it against the server's v1 certs."""
    claims: dict[str, Any] = id_token.verify_token(
        token, Request(), audience, certs_url=f"{live.url}/oauth2/v1/certs"
    )
    return claims


# print-access-token ---------------------------------------------------------------------------


def test_owner_access_token(live: LiveServer, accounts: Accounts) -> None:
    """Without flags, the owner's own access token with every scope it was granted."""
    info = accounts.tokeninfo(printed(run(live, "print-access-token")))
    assert info["email"] == accounts.owner_email
    assert CLOUD_PLATFORM in info["scope"].split()


def test_owner_access_token_with_scopes(live: LiveServer, accounts: Accounts) -> None:
    """--scopes narrows the token to the scopes named."""
    token = printed(run(live, "print-access-token", f"--scopes={CLOUD_PLATFORM}"))
    assert accounts.tokeninfo(token)["scope"] == CLOUD_PLATFORM


def test_scope_not_granted_is_one_error(live: LiveServer) -> None:
    """A scope the owner's refresh token does not carry is the server's invalid_scope."""
    result = run(live, "print-access-token", "--scopes=https://www.googleapis.com/auth/drive")
    assert "invalid_scope" in one_error_line(result, 1)


def test_impersonated_access_token(live: LiveServer, accounts: Accounts) -> None:
    """--impersonate-service-account prints the target's token, for cloud-platform."""
    token = printed(
        run(live, "print-access-token", f"--impersonate-service-account={accounts.target}")
    )
    info = accounts.tokeninfo(token)
    assert info["email"] == accounts.target
    assert info["scope"] == CLOUD_PLATFORM


def test_delegation_chain_access_token(live: LiveServer, accounts: Accounts) -> None:
    """``d1,d2,target``: the last entry is impersonated through the others, in order; the
    owner alone may not impersonate it, and the chain out of order fails."""
    chain = f"{accounts.d1},{accounts.d2},{accounts.chained}"
    token = printed(run(live, "print-access-token", f"--impersonate-service-account={chain}"))
    assert accounts.tokeninfo(token)["email"] == accounts.chained
    direct = run(live, "print-access-token", f"--impersonate-service-account={accounts.chained}")
    assert "PERMISSION_DENIED" in one_error_line(direct, 1)
    swapped = f"{accounts.d2},{accounts.d1},{accounts.chained}"
    reordered = run(live, "print-access-token", f"--impersonate-service-account={swapped}")
    assert "PERMISSION_DENIED" in one_error_line(reordered, 1)


def test_key_file_access_token(live: LiveServer, accounts: Accounts, tmp_path: Path) -> None:
    """--credentials KEY_FILE: the service account's own token (jwt-bearer grant)."""
    key = accounts.key_file(accounts.d1, tmp_path)
    token = printed(run(live, "print-access-token", "--credentials", str(key)))
    assert accounts.tokeninfo(token)["email"] == accounts.d1


# print-identity-token -------------------------------------------------------------------------


def test_impersonated_identity_token_with_email(live: LiveServer, accounts: Accounts) -> None:
    """--audiences and --include-email: a token for the audience that names the target."""
    token = printed(
        run(
            live,
            "print-identity-token",
            f"--audiences={AUDIENCE}",
            "--include-email",
            f"--impersonate-service-account={accounts.target}",
        )
    )
    claims = verified(live, token, AUDIENCE)
    assert claims["email"] == accounts.target
    assert claims["email_verified"] is True
    assert claims["sub"] == accounts.unique_id(accounts.target)
    assert claims["iss"] == "https://accounts.google.com"


def test_identity_token_without_email(live: LiveServer, accounts: Accounts) -> None:
    """Without --include-email the token carries no email claim, like Google's."""
    token = printed(
        run(
            live,
            "print-identity-token",
            f"--audiences={AUDIENCE}",
            f"--impersonate-service-account={accounts.target}",
        )
    )
    claims = verified(live, token, AUDIENCE)
    assert "email" not in claims
    assert claims["sub"] == accounts.unique_id(accounts.target)


def test_delegation_chain_identity_token(live: LiveServer, accounts: Accounts) -> None:
    """The chain form works for ID tokens too; the token is the chain's target's."""
    chain = f"{accounts.d1},{accounts.d2},{accounts.chained}"
    token = printed(
        run(
            live,
            "print-identity-token",
            f"--audiences={AUDIENCE}",
            "--include-email",
            f"--impersonate-service-account={chain}",
        )
    )
    assert verified(live, token, AUDIENCE)["email"] == accounts.chained


def test_owner_identity_token_is_for_its_client(live: LiveServer, accounts: Accounts) -> None:
    """A user's ID token (from the refresh grant) is for its OAuth client id."""
    client_id = json.loads(live.owner_credentials.read_text())["client_id"]
    claims = verified(live, printed(run(live, "print-identity-token")), client_id)
    assert claims["email"] == accounts.owner_email


def test_key_file_identity_token(live: LiveServer, accounts: Accounts, tmp_path: Path) -> None:
    """A key file gets a token for --audiences from the jwt-bearer grant (target_audience)."""
    key = accounts.key_file(accounts.d2, tmp_path)
    token = printed(
        run(live, "print-identity-token", f"--audiences={AUDIENCE}", "--credentials", str(key))
    )
    assert verified(live, token, AUDIENCE)["email"] == accounts.d2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([f"--audiences={AUDIENCE}"], "--audiences needs a service account"),
        (["--include-email"], "--include-email requires --impersonate-service-account"),
        (["--token-format=full"], "Compute Engine"),
        (["--impersonate-service-account=a@b.test"], "--audiences is required"),
        (["--audiences=", "--impersonate-service-account=a@b.test"], "must not be empty"),
        (["--impersonate-service-account=a@b.test,,c@d.test", "--audiences=x"], "empty entries"),
    ],
)
def test_identity_token_usage_errors(live: LiveServer, args: list[str], says: str) -> None:
    """Flags that cannot apply say why, as one line, exit 2 (gcloud's rules)."""
    assert says in one_error_line(run(live, "print-identity-token", *args), 2)


def test_no_credentials_is_one_error(tmp_path: Path) -> None:
    """Without a server's data dir or --credentials, the error says where it looked."""
    result = CliRunner().invoke(
        cli, ["auth", "print-access-token", "--data-dir", str(tmp_path)], env=_CLEAN_ENV
    )
    assert "owner.json does not exist" in one_error_line(result, 1)


def test_unreachable_server_is_one_error(live: LiveServer, accounts: Accounts) -> None:
    """--server overrides the announced API; one that does not answer is named in the error."""
    port = free_port()
    result = run(
        live,
        "print-access-token",
        f"--impersonate-service-account={accounts.target}",
        "--server",
        f"http://127.0.0.1:{port}",
    )
    assert f"cannot reach tokensmith at http://127.0.0.1:{port}" in one_error_line(result, 1)


@pytest.mark.parametrize(
    ("value", "chain"),
    [
        ("t@p.test", ("t@p.test", ())),
        ("a@p.test, b@p.test ,t@p.test", ("t@p.test", ("a@p.test", "b@p.test"))),
    ],
)
def test_parse_chain(value: str, chain: tuple[str, tuple[str, ...]]) -> None:
    """gcloud's comma form: the last entry is the target, the others delegates in order."""
    assert parse_chain(value) == chain


# application-default ----------------------------------------------------------------------------


def adc(live: LiveServer, path: Path, *args: str) -> dict[str, Any]:
    result = run(live, "application-default", "--output", str(path), *args)
    assert result.exit_code == 0, result.output
    assert f"GOOGLE_APPLICATION_CREDENTIALS={path}" in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content: dict[str, Any] = json.loads(path.read_text())
    return content


def test_authorized_user_file_loads_and_refreshes(
    live: LiveServer, accounts: Accounts, tmp_path: Path
) -> None:
    """The authorized_user file loads in google-auth and refreshes at the server (given its
    token_uri, which google-auth ignores in the file)."""
    path = tmp_path / "user.json"
    content = adc(live, path, "--type", "authorized_user")
    assert content["type"] == "authorized_user"
    creds, _ = google.auth.load_credentials_from_file(str(path))
    assert isinstance(creds, user_credentials.Credentials)
    creds = creds.with_token_uri(f"{live.url}/token")
    creds.refresh(Request())
    assert accounts.tokeninfo(creds.token)["email"] == accounts.owner_email


def test_service_account_file_loads_and_refreshes(
    live: LiveServer, accounts: Accounts, tmp_path: Path
) -> None:
    """--type service_account --service-account EMAIL writes a new key of that account; it
    loads in google-auth and refreshes at its token_uri, the server."""
    path = tmp_path / "sa.json"
    content = adc(live, path, "--type", "service_account", "--service-account", accounts.target)
    assert content["type"] == "service_account"
    assert content["token_uri"] == f"{live.url}/token"
    creds, _ = google.auth.load_credentials_from_file(str(path), scopes=[CLOUD_PLATFORM])
    assert isinstance(creds, service_account.Credentials)
    creds.refresh(Request())
    assert accounts.tokeninfo(creds.token)["email"] == accounts.target


def test_impersonated_file_loads_and_refreshes_through_the_proxy(
    live: LiveServer, accounts: Accounts, tmp_path: Path
) -> None:
    """The impersonated file has the fields of COMPAT.md §2d (and Node's ``endpoint``); it
    loads in google-auth, and refreshes through the HTTPS proxy (google-auth ignores the
    URL's host and calls iamcredentials.googleapis.com)."""
    path = tmp_path / "impersonated.json"
    chain = f"{accounts.d1},{accounts.d2},{accounts.chained}"
    content = adc(
        live,
        path,
        "--type",
        "impersonated_service_account",
        f"--impersonate-service-account={chain}",
    )
    assert content["type"] == "impersonated_service_account"
    assert content["service_account_impersonation_url"] == (
        f"{live.url}/v1/projects/-/serviceAccounts/{accounts.chained}:generateAccessToken"
    )
    assert content["delegates"] == [
        f"projects/-/serviceAccounts/{accounts.d1}",
        f"projects/-/serviceAccounts/{accounts.d2}",
    ]
    assert content["source_credentials"]["type"] == "authorized_user"
    assert content["endpoint"] == live.url
    creds, _ = google.auth.load_credentials_from_file(str(path))
    assert isinstance(creds, impersonated_credentials.Credentials)
    assert creds.service_account_email == accounts.chained
    ca = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains)
    with ProxyThread(ca, ("127.0.0.1", live.port)) as proxy:
        token = run_google_auth(
            """
            import google.auth
            from google.auth.transport.requests import Request

            creds, _ = google.auth.load_credentials_from_file(ARGS["path"])
            creds.refresh(Request())
            print(json.dumps(creds.token))
            """,
            proxy,
            ca,
            path=str(path),
        )
    assert accounts.tokeninfo(token)["email"] == accounts.chained


def test_key_file_copied_as_service_account_file(
    live: LiveServer, accounts: Accounts, tmp_path: Path
) -> None:
    """With a key file as --credentials, --type service_account writes that key."""
    key = accounts.key_file(accounts.d1, tmp_path)
    path = tmp_path / "copy.json"
    content = adc(live, path, "--type", "service_account", "--credentials", str(key))
    assert content == json.loads(key.read_text())


def test_default_output_is_in_the_data_dir(live: LiveServer) -> None:
    """Without --output the file goes to DATA_DIR/credentials, private to its owner."""
    result = run(live, "application-default", "--type", "authorized_user")
    assert result.exit_code == 0, result.output
    path = live.data_dir / "credentials" / "application_default_credentials.json"
    assert str(path) in result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["type"] == "authorized_user"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--type", "impersonated_service_account"], 2, "needs --impersonate-service-account"),
        (["--type", "authorized_user", "--impersonate-service-account=a@b.test"], 2, "goes with"),
        (["--type", "service_account"], 2, "--service-account EMAIL"),
        (["--type", "authorized_user", "--service-account=a@b.test"], 2, "goes with"),
        (["--type", "nonsense"], 2, "nonsense"),
    ],
)
def test_application_default_usage_errors(
    live: LiveServer, tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    """Wrong combinations are one error line and write nothing."""
    path = tmp_path / "adc.json"
    result = run(live, "application-default", "--output", str(path), *args)
    assert says in one_error_line(result, code)
    assert not path.exists()


def test_authorized_user_file_needs_a_user(
    live: LiveServer, accounts: Accounts, tmp_path: Path
) -> None:
    """--type authorized_user from a key file is refused: there is no refresh token to write."""
    key = accounts.key_file(accounts.d2, tmp_path)
    result = run(
        live,
        "application-default",
        "--type",
        "authorized_user",
        "--credentials",
        str(key),
        "--output",
        str(tmp_path / "adc.json"),
    )
    assert "needs a user's credentials" in one_error_line(result, 1)


NODE_PROJECT = Path(__file__).parents[1] / "compat" / "node"
NODE_SCRIPT = """
import { GoogleAuth } from 'google-auth-library';
const auth = new GoogleAuth();
const token = await (await auth.getClient()).getAccessToken();
const signature = await auth.sign('signed by node');
console.log(JSON.stringify({token: token.token, signature}));
"""


@pytest.mark.node
def test_impersonated_file_works_in_node(
    live: LiveServer, accounts: Accounts, tmp_path: Path
) -> None:
    """Node honours the file's ``endpoint``: generateAccessToken and signBlob go straight to
    the server, and only the source's refresh (hard-coded oauth2.googleapis.com) needs the
    proxy."""
    node = shutil.which("node")
    installed = (NODE_PROJECT / "node_modules" / "google-auth-library").is_dir()
    require_or_skip(
        node is not None and installed,
        "TOKENSMITH_REQUIRE_NODE",
        "node or google-auth-library (npm ci in tests/compat/node) is not installed",
    )
    assert node is not None
    path = tmp_path / "impersonated.json"
    adc(
        live,
        path,
        "--type",
        "impersonated_service_account",
        f"--impersonate-service-account={accounts.target}",
    )
    ca = LocalCA.load_or_create(tmp_path / "ca", POLICY.ca_domains)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with ProxyThread(ca, ("127.0.0.1", live.port)) as proxy:
        env.update(
            HTTPS_PROXY=proxy.url,
            NO_PROXY="127.0.0.1,localhost",
            NODE_EXTRA_CA_CERTS=str(ca.ca_path),
            GOOGLE_APPLICATION_CREDENTIALS=str(path),
        )
        completed = subprocess.run(
            [node, "--input-type=module", "-e", NODE_SCRIPT],
            cwd=NODE_PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert accounts.tokeninfo(result["token"])["email"] == accounts.target
    certs = httpx.get(
        f"{live.url}/service_accounts/v1/metadata/x509/{accounts.target}", trust_env=False
    ).json()
    signature = base64.b64decode(result["signature"])
    assert signed_by_one_of(certs.values(), b"signed by node", signature)
