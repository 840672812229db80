"""Two real ``tokensmith serve`` nodes on one PostgreSQL: they agree, and survive faults.

Each test module run gets a throwaway database; both nodes share it and one key-encryption key.
Skipped with a reason where no PostgreSQL is reachable (mandatory in CI).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import requests

from tests.pg import ADMIN_URL, require_postgres, temporary_database
from tokensmith.testing import LiveServer, owner_access_token

pytestmark = pytest.mark.slow

PROJECT = "tokensmith-local"
CREATOR = "roles/iam.serviceAccountTokenCreator"
PROPAGATION_BOUND = 2.0  # seconds; documented in docs/deployment.md
KEY_SET_REFRESH = 5.0  # seconds; services/keyring.py _PUBLISHED_REFRESH_INTERVAL


def email(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.iam.gserviceaccount.com"


class Node:
    def __init__(self, server: LiveServer, token: str) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    @property
    def url(self) -> str:
        return self.server.url

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return self.session.request(method, self.url + path, json=body, headers=headers, timeout=30)

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.call(method, path, body)
        assert response.status_code == 200, response.text
        return response.json()


class Cluster:
    def __init__(self, root: Path, database: str) -> None:
        self.root = root
        self.database = database
        self.kek = root / "shared-kek.key"
        self.kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        self.kek.chmod(0o600)
        self.a = self.start("a")
        self.b = self.start("b")

    def args(self) -> list[str]:
        return ["--database", self.database, "--kek-file", str(self.kek)]

    def start(self, name: str) -> Node:
        server = LiveServer(self.root / name, extra_args=self.args()).start()
        return Node(server, owner_access_token(server))

    def stop(self) -> None:
        for node in (self.a, self.b):
            node.server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_postgres()
    with temporary_database() as url:
        built = Cluster(tmp_path_factory.mktemp("cluster"), url)
        try:
            yield built
        finally:
            built.stop()


def create_account(node: Node, account_id: str) -> dict[str, Any]:
    return dict(
        node.ok("POST", f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": account_id})
    )


def set_binding(node: Node, target: str, members: list[str]) -> None:
    path = f"/v1/projects/-/serviceAccounts/{email(target)}"
    policy = node.ok("POST", f"{path}:getIamPolicy")
    policy["bindings"] = [{"role": CREATOR, "members": members}] if members else []
    node.ok("POST", f"{path}:setIamPolicy", {"policy": policy})


def key_token(node: Node, account_id: str) -> str:
    """An access token for ``account_id`` obtained on ``node`` with a fresh key file."""
    key = node.ok("POST", f"/v1/projects/-/serviceAccounts/{email(account_id)}/keys", {})
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    info = json.loads(base64.b64decode(key["privateKeyData"]))
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    creds.refresh(Request())
    return str(creds.token)


def eventually(check: Any, bound: float = PROPAGATION_BOUND) -> float:
    """Poll ``check`` until true; returns the seconds it took; fails past the bound."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > bound:
            pytest.fail(f"not true within {bound}s")
        time.sleep(0.05)


def test_token_from_one_node_verifies_on_the_other(cluster: Cluster) -> None:
    """An ID token minted on A verifies with B's JWKS; A's access token works on B."""
    create_account(cluster.a, "minted-on-a")
    set_binding(cluster.a, "minted-on-a", ["user:owner@tokensmith.local"])
    token = cluster.a.ok(
        "POST",
        f"/v1/projects/-/serviceAccounts/{email('minted-on-a')}:generateIdToken",
        {"audience": "https://x"},
    )["token"]
    jwks = requests.get(f"{cluster.b.url}/oauth2/v3/certs", timeout=10).json()
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = pyjwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid)).key
    assert pyjwt.decode(token, key, algorithms=["RS256"], audience="https://x")["sub"]
    a_token = owner_access_token(cluster.a.server)
    response = cluster.b.call("GET", f"/v1/projects/{PROJECT}/serviceAccounts", token=a_token)
    assert response.status_code == 200


def test_policy_change_on_a_applies_on_b_within_the_bound(cluster: Cluster) -> None:
    """A grant and its removal on A take effect on B within the documented bound."""
    create_account(cluster.a, "policy-target")
    create_account(cluster.a, "policy-caller")
    caller = key_token(cluster.a, "policy-caller")
    path = f"/v1/projects/-/serviceAccounts/{email('policy-target')}:generateIdToken"

    def status_on_b() -> int:
        return cluster.b.call("POST", path, {"audience": "a"}, token=caller).status_code

    assert status_on_b() == 403
    set_binding(cluster.a, "policy-target", [f"serviceAccount:{email('policy-caller')}"])
    eventually(lambda: status_on_b() == 200)
    set_binding(cluster.a, "policy-target", [])
    eventually(lambda: status_on_b() == 403)


def test_disable_and_revoke_on_a_apply_on_b(cluster: Cluster) -> None:
    """A disabled account's token and a revoked token stop working on B within the bound."""
    create_account(cluster.a, "disabled-later")
    token = key_token(cluster.a, "disabled-later")
    path = f"/v1/projects/-/serviceAccounts/{email('disabled-later')}"
    set_binding(cluster.a, "disabled-later", [f"serviceAccount:{email('disabled-later')}"])
    assert (
        cluster.b.call(
            "POST", f"{path}:generateIdToken", {"audience": "a"}, token=token
        ).status_code
        == 200
    )
    cluster.a.ok("POST", f"{path}:disable", {})
    eventually(
        lambda: (
            cluster.b.call(
                "POST", f"{path}:generateIdToken", {"audience": "a"}, token=token
            ).status_code
            == 401
        )
    )
    cluster.a.ok("POST", f"{path}:enable", {})
    owner = owner_access_token(cluster.a.server)
    assert cluster.b.call("GET", path, token=owner).status_code == 200
    revoked = requests.post(f"{cluster.a.url}/revoke", data={"token": owner}, timeout=10)
    assert revoked.status_code == 200
    eventually(lambda: cluster.b.call("GET", path, token=owner).status_code == 401)


def test_concurrent_set_iam_policy_exactly_one_wins(cluster: Cluster) -> None:
    """The same etag written on A and B at once: one 200, one 409 ABORTED, every time."""
    create_account(cluster.a, "raced-policy")
    path = f"/v1/projects/-/serviceAccounts/{email('raced-policy')}"
    for round_ in range(5):
        policy = cluster.a.ok("POST", f"{path}:getIamPolicy")
        barrier = threading.Barrier(2)
        results: list[requests.Response] = []

        def write(
            node: Node,
            member: str,
            policy: dict[str, Any] = policy,
            barrier: threading.Barrier = barrier,
            results: list[requests.Response] = results,
        ) -> None:
            body = {**policy, "bindings": [{"role": CREATOR, "members": [member]}]}
            barrier.wait()
            results.append(node.call("POST", f"{path}:setIamPolicy", {"policy": body}))

        threads = [
            threading.Thread(target=write, args=(cluster.a, f"user:a{round_}@example.com")),
            threading.Thread(target=write, args=(cluster.b, f"user:b{round_}@example.com")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r.status_code for r in results) == [200, 409]
        loser = next(r for r in results if r.status_code == 409)
        assert loser.json()["error"]["status"] == "ABORTED"


def test_forced_rotation_happens_once_and_is_published_everywhere_first(
    cluster: Cluster,
) -> None:
    """Two concurrent `keys rotate` create one key, which both nodes publish before it signs."""
    before = {
        k["kid"]
        for k in requests.get(f"{cluster.a.url}/oauth2/v3/certs", timeout=10).json()["keys"]
    }
    command = [
        sys.executable,
        "-m",
        "tokensmith",
        "keys",
        "rotate",
        *cluster.args(),
        "--data-dir",
        str(cluster.root / "a"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    runs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert sum(out.startswith("issuer: new key") for out in outputs) == 1, outputs
    assert sum("nothing to do" in out for out in outputs) == 1, outputs

    # Each worker of each node reloads the key set at most every 5 s when serving certs; past
    # that every answer must carry the new key (which signs only hours later).
    time.sleep(KEY_SET_REFRESH + 0.5)

    def every_answer(node: Node) -> list[set[str]]:
        return [
            {
                k["kid"]
                for k in requests.get(f"{node.url}/oauth2/v3/certs", timeout=10).json()["keys"]
            }
            for _ in range(12)
        ]

    answers = every_answer(cluster.a) + every_answer(cluster.b)
    new_kids = {kid for answer in answers for kid in answer} - before
    assert len(new_kids) == 1, answers
    (new_kid,) = new_kids
    assert all(new_kid in answer for answer in answers), answers
    create_account(cluster.a, "after-rotation")
    set_binding(cluster.a, "after-rotation", ["user:owner@tokensmith.local"])
    for node in (cluster.a, cluster.b):
        token = node.ok(
            "POST",
            f"/v1/projects/-/serviceAccounts/{email('after-rotation')}:generateIdToken",
            {"audience": "a"},
        )["token"]
        assert pyjwt.get_unverified_header(token)["kid"] != new_kid, "signs only later"


def test_audit_records_from_both_nodes_land_in_one_log(cluster: Cluster) -> None:
    """Credential requests served by A and by B are both in the shared audit log."""
    create_account(cluster.a, "audited-both")
    set_binding(cluster.a, "audited-both", ["user:owner@tokensmith.local"])
    path = f"/v1/projects/-/serviceAccounts/{email('audited-both')}:generateIdToken"
    cluster.a.ok("POST", path, {"audience": "from-a"})
    cluster.b.ok("POST", path, {"audience": "from-b"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokensmith",
            "audit",
            "--database",
            cluster.database,
            "--account",
            email("audited-both"),
            "--method",
            "generateIdToken",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    audiences = {json.loads(line)["detail"]["audience"] for line in result.stdout.splitlines()}
    assert audiences == {"from-a", "from-b"}


def test_sigkill_loses_nothing_acknowledged(cluster: Cluster) -> None:
    """An account acknowledged by A survives A being killed with SIGKILL."""
    created = create_account(cluster.a, "survives-kill")
    process = cluster.a.server.process
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    cluster.a.server.process = None
    on_b = cluster.b.ok("GET", f"/v1/projects/-/serviceAccounts/{email('survives-kill')}")
    assert on_b["uniqueId"] == created["uniqueId"]
    cluster.a = cluster.start("a")
    assert cluster.a.ok("GET", f"/v1/projects/-/serviceAccounts/{email('survives-kill')}")


def test_database_connection_loss_fails_fast_and_recovers(cluster: Cluster) -> None:
    """Terminating every database connection under load gives 503s or successes, never a 403
    or a hang, and the node recovers by itself."""
    import psycopg

    create_account(cluster.a, "under-load")
    set_binding(cluster.a, "under-load", ["user:owner@tokensmith.local"])
    path = f"/v1/projects/-/serviceAccounts/{email('under-load')}:signBlob"
    statuses: list[int] = []
    slowest = 0.0
    stop = threading.Event()

    def load() -> None:
        nonlocal slowest
        while not stop.is_set():
            started = time.monotonic()
            statuses.append(cluster.a.call("POST", path, {"payload": "aGk="}).status_code)
            slowest = max(slowest, time.monotonic() - started)

    worker = threading.Thread(target=load)
    worker.start()
    database = cluster.database.rsplit("/", 1)[1]
    try:
        for _ in range(3):
            time.sleep(0.3)
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(30)
    assert set(statuses) <= {200, 503}, set(statuses)
    assert slowest < 10
    eventually(
        lambda: cluster.a.call("POST", path, {"payload": "aGk="}).status_code == 200, bound=10
    )


def test_database_restart_under_load(cluster: Cluster) -> None:
    """The PostgreSQL server restarting under load: only 200s and 503s, then recovery."""
    pg_ctl = shutil.which("pg_ctlcluster")
    if pg_ctl is None or not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root on this machine")
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    create_account(cluster.a, "restart-load")
    set_binding(cluster.a, "restart-load", ["user:owner@tokensmith.local"])
    path = f"/v1/projects/-/serviceAccounts/{email('restart-load')}:generateIdToken"
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            statuses.append(cluster.b.call("POST", path, {"audience": "a"}).status_code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.3)
        subprocess.run(
            [pg_ctl, "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(60)
    assert set(statuses) <= {200, 503}, set(statuses)
    eventually(lambda: cluster.b.call("POST", path, {"audience": "a"}).status_code == 200, bound=15)


def test_node_refuses_a_database_from_a_newer_version(tmp_path: Path) -> None:
    """A node started on a database migrated by a newer tokensmith exits with a clear error."""
    require_postgres()
    import psycopg

    with temporary_database() as url:
        first = LiveServer(tmp_path / "first", extra_args=["--database", url]).start()
        first.stop()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tokensmith",
                "serve",
                "--data-dir",
                str(tmp_path / "second"),
                "--database",
                url,
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 2
        assert "newer tokensmith" in result.stderr
