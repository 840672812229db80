"""Google's real clients, unmodified, against a live `tokensmith serve --metadata-port`.

Each client runs in its own process with a clean environment: `eval "$(tokensmith env)"` sets
GCE_METADATA_HOST/_IP/_ROOT (google-auth reads them at import time), HOME is empty (no gcloud
or ADC files), and every proxy variable points at a closed loopback port, so that anything not
bound for loopback fails at once instead of reaching Google.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from tests.conftest import require_or_skip
from tests.metadata.conftest import CLOUD, LiveDeployment, email
from tokensmith.testing import free_port

AUDIENCE = "https://receiver.example.com/push?topic=a&b=c"
IAM = "https://www.googleapis.com/auth/iam"
NODE_DIR = Path(__file__).parent / "node"

PYTHON_CLIENT = r"""
import json, sys
import google.auth
from google.auth import compute_engine, impersonated_credentials
from google.auth.transport.requests import Request
from google.oauth2 import id_token

api, audience, target = sys.argv[1:4]
request = Request()
out = {}
creds, project = google.auth.default()
creds.refresh(request)
out["default"] = {
    "type": f"{type(creds).__module__}.{type(creds).__name__}",
    "project": project,
    "email": creds.service_account_email,
    "token": creds.token,
    "universe": creds.universe_domain,
}
scoped = compute_engine.Credentials(scopes=["https://www.googleapis.com/auth/iam", "openid"])
scoped.refresh(request)
out["scoped"] = scoped.token
idc = compute_engine.IDTokenCredentials(request, audience, use_metadata_identity_endpoint=True)
idc.refresh(request)
out["id_token"] = idc.token
out["fetched"] = id_token.fetch_id_token(request, audience)
out["verified"] = id_token.verify_token(
    out["fetched"], request, audience=audience, certs_url=api + "/oauth2/v1/certs"
)
imp = impersonated_credentials.Credentials(
    source_credentials=creds,
    target_principal=target,
    target_scopes=["https://www.googleapis.com/auth/cloud-platform"],
    iam_endpoint_override=f"{api}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
)
imp.refresh(request)
out["impersonated"] = imp.token
print(json.dumps(out))
"""


def client_env(live_md: LiveDeployment, **extra: str) -> dict[str, str]:
    """The clean environment of a client process, before `tokensmith env` is applied."""
    trap = f"http://127.0.0.1:{free_port()}"  # nothing listens: escapes fail fast
    env = live_md.client_env(
        HTTP_PROXY=trap, HTTPS_PROXY=trap, http_proxy=trap, https_proxy=trap, **extra
    )
    for name in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"):
        env.pop(name)
    return env


def with_tokensmith_env(live_md: LiveDeployment, command: list[str]) -> list[str]:
    """`bash -c 'eval "$(tokensmith env --data-dir D)" && exec COMMAND'`."""
    tokensmith = (
        f"{sys.executable} -m tokensmith env --no-credentials --data-dir {live_md.server.data_dir}"
    )
    return ["bash", "-c", f'eval "$({tokensmith})" && exec "$@"', "client", *command]


def run(command: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 0, f"{command[-3:]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def verify(live_md: LiveDeployment, token: str, audience: str) -> dict[str, Any]:
    """Verify an ID token as a receiving service would, against our /oauth2/v1/certs."""
    return dict(
        id_token.verify_token(
            token, Request(), audience=audience, certs_url=f"{live_md.server.url}/oauth2/v1/certs"
        )
    )


def tokeninfo(live_md: LiveDeployment, access_token: str) -> dict[str, Any]:
    response = live_md.owner.get("/tokeninfo", params={"access_token": access_token})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def default_unique_id(live_md: LiveDeployment) -> str:
    account = live_md.api("GET", f"/v1/projects/-/serviceAccounts/{live_md.default_email}")
    return str(account["uniqueId"])


# --- Python google-auth ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_client(live_md: LiveDeployment) -> dict[str, Any]:
    """Run the Python client script once; each test checks one part of what it got."""
    live_md.create_account("backend")
    live_md.grant(email("backend"), f"serviceAccount:{live_md.default_email}")
    command = with_tokensmith_env(
        live_md,
        [sys.executable, "-c", PYTHON_CLIENT, live_md.server.url, AUDIENCE, email("backend")],
    )
    return dict(json.loads(run(command, client_env(live_md))))


@pytest.mark.compat("py-md-detect")
@pytest.mark.compat("py-md-access-token")
def test_python_default_finds_compute_engine_credentials(
    python_client: dict[str, Any], live_md: LiveDeployment
) -> None:
    """google.auth.default() detects the metadata server and returns compute credentials."""
    found = python_client["default"]
    assert found["type"] == "google.auth.compute_engine.credentials.Credentials"
    assert found["project"] == "tokensmith-local"
    assert found["email"] == live_md.default_email
    assert found["universe"] == "googleapis.com"
    info = tokeninfo(live_md, found["token"])
    assert info["email"] == live_md.default_email
    assert set(info["scope"].split()) == {CLOUD, "https://www.googleapis.com/auth/userinfo.email"}


@pytest.mark.compat("py-md-access-token-scopes")
def test_python_explicit_scopes(python_client: dict[str, Any], live_md: LiveDeployment) -> None:
    """compute_engine.Credentials(scopes=…) gets a token with exactly those scopes."""
    assert set(tokeninfo(live_md, python_client["scoped"])["scope"].split()) == {IAM, "openid"}


@pytest.mark.compat("py-md-id-token")
@pytest.mark.compat("py-md-fetch-id-token")
def test_python_id_tokens_verify_with_our_certs(
    python_client: dict[str, Any], live_md: LiveDeployment, default_unique_id: str
) -> None:
    """IDTokenCredentials (metadata identity) and fetch_id_token give verifiable full tokens."""
    for token in (python_client["id_token"], python_client["fetched"]):
        claims = verify(live_md, token, AUDIENCE)
        assert claims["aud"] == AUDIENCE
        assert claims["sub"] == default_unique_id
        assert claims["email"] == live_md.default_email
        assert claims["google"]["compute_engine"]["instance_name"] == "instance-1"
    assert python_client["verified"]["sub"] == default_unique_id


@pytest.mark.compat("py-imp-access-token")
def test_python_workload_impersonates_with_its_metadata_token(
    python_client: dict[str, Any], live_md: LiveDeployment
) -> None:
    """The metadata token is a caller credential: the workload impersonates `backend`."""
    assert tokeninfo(live_md, python_client["impersonated"])["email"] == email("backend")


# --- gcloud ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcloud(live_md: LiveDeployment, tmp_path_factory: pytest.TempPathFactory) -> Any:
    executable = shutil.which("gcloud")
    require_or_skip(executable is not None, "TOKENSMITH_REQUIRE_GCLOUD", "gcloud is not installed")
    assert executable is not None
    config = tmp_path_factory.mktemp("gcloud-config")
    env = client_env(
        live_md,
        LANG="C.UTF-8",
        CLOUDSDK_CONFIG=str(config),
        CLOUDSDK_CORE_CHECK_GCE_METADATA="true",
        CLOUDSDK_CORE_DISABLE_PROMPTS="1",
        CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
        CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true",
        CLOUDSDK_SURVEY_DISABLE_PROMPTS="true",
        CLOUDSDK_METRICS_ENVIRONMENT="tokensmith-tests",
    )

    def gcloud(*args: str) -> str:
        return run(with_tokensmith_env(live_md, [executable, *args]), env).strip()

    return gcloud


@pytest.mark.compat("gcloud-md-access-token")
def test_gcloud_print_access_token_from_the_metadata_server(
    gcloud: Any, live_md: LiveDeployment
) -> None:
    """With no account configured, gcloud detects the metadata server and prints its token."""
    token = gcloud("auth", "print-access-token")
    assert tokeninfo(live_md, token)["email"] == live_md.default_email


@pytest.mark.compat("gcloud-md-id-token")
def test_gcloud_print_identity_token_full(
    gcloud: Any, live_md: LiveDeployment, default_unique_id: str
) -> None:
    """print-identity-token --token-format=full: an unencoded audience arrives whole."""
    token = gcloud("auth", "print-identity-token", f"--audiences={AUDIENCE}", "--token-format=full")
    claims = verify(live_md, token, AUDIENCE)
    assert claims["sub"] == default_unique_id
    assert claims["email"] == live_md.default_email
    assert claims["google"]["compute_engine"]["project_id"] == "tokensmith-local"


# --- Node google-auth-library ---------------------------------------------------------------


@pytest.fixture(scope="module")
def node_client(live_md: LiveDeployment) -> dict[str, Any]:
    node, npm = shutil.which("node"), shutil.which("npm")
    require_or_skip(
        node is not None and npm is not None, "TOKENSMITH_REQUIRE_NODE", "node/npm not installed"
    )
    assert node is not None
    assert npm is not None
    if not (NODE_DIR / "node_modules" / "google-auth-library").is_dir():
        subprocess.run(
            [npm, "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    output = run(
        with_tokensmith_env(live_md, [node, "metadata.mjs", AUDIENCE]),
        client_env(live_md),
        NODE_DIR,
    )
    result = dict(json.loads(output))
    assert "error" not in result, result["error"]
    return result


@pytest.mark.compat("node-md-access-token")
def test_node_detects_the_metadata_server_and_gets_an_access_token(
    node_client: dict[str, Any], live_md: LiveDeployment
) -> None:
    """new GoogleAuth().getAccessToken() uses Compute credentials on the metadata server."""
    assert node_client["clientType"] == "Compute"
    assert node_client["projectId"] == "tokensmith-local"
    assert tokeninfo(live_md, node_client["accessToken"])["email"] == live_md.default_email


@pytest.mark.compat("node-md-id-token")
def test_node_id_token_client_token_verifies(
    node_client: dict[str, Any], live_md: LiveDeployment, default_unique_id: str
) -> None:
    """getIdTokenClient(aud) sends the audience unencoded; the token verifies for it."""
    claims = verify(live_md, node_client["idToken"], AUDIENCE)
    assert claims["sub"] == default_unique_id
    assert claims["email"] == live_md.default_email
