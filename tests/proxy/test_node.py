"""Node google-auth-library behind the proxy: a service-account key's token grant, which Node
hard-codes at https://oauth2.googleapis.com/token (COMPAT.md §3b), reaches tokensmith through
the proxy with ``NODE_EXTRA_CA_CERTS`` naming the local CA."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_or_skip
from tests.proxy.conftest import ProxyThread, tunnelled_hosts
from tokensmith.proxy import LocalCA
from tokensmith.testing import LiveServer, owner_access_token

pytestmark = [pytest.mark.node, pytest.mark.slow]

# google-auth-library as tests/compat installs it (npm ci there); not installed from here.
NODE_PROJECT = Path(__file__).parents[1] / "compat" / "node"
AUDIENCE = "https://node-backend.example.test/"
SCRIPT = """
import { GoogleAuth } from 'google-auth-library';
const keyFile = process.argv[1];
const auth = new GoogleAuth({keyFile, scopes: ['https://www.googleapis.com/auth/cloud-platform']});
const access = await (await auth.getClient()).getAccessToken();
const ids = await auth.getIdTokenClient(process.argv[2]);
const idToken = await ids.idTokenProvider.fetchIdToken(process.argv[2]);
console.log(JSON.stringify({access: access.token, id: idToken}));
"""


@pytest.mark.compat("node-jwt-key")
def test_node_service_account_grant_through_the_proxy(
    proxy: ProxyThread,
    ca: LocalCA,
    live: LiveServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Node's access-token and ID-token grants for a key file go to oauth2.googleapis.com,
    which the proxy serves from tokensmith; both tokens are the account's."""
    node = shutil.which("node")
    installed = (NODE_PROJECT / "node_modules" / "google-auth-library").is_dir()
    require_or_skip(
        node is not None and installed,
        "TOKENSMITH_REQUIRE_NODE",
        "node or google-auth-library (npm ci in tests/compat/node) is not installed",
    )
    assert node is not None
    caplog.set_level(logging.DEBUG, logger="tokensmith.proxy")
    with httpx.Client(
        base_url=live.url,
        headers={"Authorization": f"Bearer {owner_access_token(live)}"},
        trust_env=False,
        timeout=10,
    ) as owner:
        email = owner.post(
            "/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "node-proxy"}
        ).json()["email"]
        created = owner.post(f"/v1/projects/-/serviceAccounts/{email}/keys", json={}).json()
        key = tmp_path / "key.json"
        key.write_bytes(base64.b64decode(created["privateKeyData"]))
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(
            HTTPS_PROXY=proxy.url,
            https_proxy=proxy.url,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
            NODE_EXTRA_CA_CERTS=str(ca.ca_path),
        )
        completed = subprocess.run(
            [node, "--input-type=module", "-e", SCRIPT, str(key), AUDIENCE],
            cwd=NODE_PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        tokens = json.loads(completed.stdout)
        info = owner.get("/tokeninfo", params={"access_token": tokens["access"]}).json()
        claims = owner.get("/tokeninfo", params={"id_token": tokens["id"]}).json()
    assert info["email"] == email
    assert claims["email"] == email
    assert claims["aud"] == AUDIENCE
    assert "oauth2.googleapis.com" in tunnelled_hosts(caplog)
