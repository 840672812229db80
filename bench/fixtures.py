"""Realistic data for the bench, and the request decks that replay against it.

``seed_database`` migrates and bootstraps a store the way ``tokensmith serve`` does
(``tokensmith.main.build``), then bulk-inserts service accounts with one SQLAlchemy Core
``executemany`` (100,000 take seconds; one ``POST`` per account would take minutes).
``prepare`` then talks to the running server through its public REST API only, as an operator
would: it creates the caller and a two-hop delegation chain (caller → d1 → d2 → target), gives
the caller a key, and grants ``roles/iam.serviceAccountTokenCreator`` under an IAM condition
(``request.time < timestamp(...)``) on every target, on d1 and on d2.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.load import Deck
from tokensmith.clock import SystemClock

__all__ = ["Fixture", "decks", "prepare", "seed_database"]

PROJECT = "tokensmith-local"
SA_DOMAIN = "iam.gserviceaccount.com"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
CONDITION = {
    "title": "bench-until-2099",
    "description": "a condition every grant carries, so that evaluation is measured too",
    "expression": 'request.time < timestamp("2099-01-01T00:00:00Z")',
}
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
AUDIENCE = "https://bench.example/api"
SIGNING_TARGETS = 16  # signBlob/signJwt targets: each first use generates an RSA key


def email(account_id: str) -> str:
    return f"{account_id}@{PROJECT}.{SA_DOMAIN}"


def bulk_account_id(i: int) -> str:
    return f"bench-sa-{i:06d}"


def seed_database(data_dir: Path, database: str, accounts: int) -> None:
    """Create the schema, the project and its owner, and ``accounts`` service accounts."""
    from sqlalchemy import insert

    from tokensmith.config import Settings
    from tokensmith.main import build
    from tokensmith.store import schema
    from tokensmith.store.sql import make_engine

    settings = Settings(data_dir=data_dir, database=database)
    build(settings).close()
    engine = make_engine(settings.database_url)
    try:
        now = SystemClock().now()
        base = 10**20 + secrets.randbelow(10**19)
        rows = [
            {
                "unique_id": str(base + i),
                "project_id": PROJECT,
                "account_id": bulk_account_id(i),
                "email": email(bulk_account_id(i)),
                "display_name": f"bench account {i}",
                "description": "",
                "disabled": False,
                "created_at": now,
                "deleted_at": None,
                "etag": base64.b64encode(secrets.token_bytes(8)).decode(),
            }
            for i in range(accounts)
        ]
        with engine.begin() as conn:
            for start in range(0, len(rows), 10_000):
                conn.execute(insert(schema.service_accounts), rows[start : start + 10_000])
    finally:
        engine.dispose()


@dataclasses.dataclass(frozen=True)
class Fixture:
    """What the decks need: who calls, on whom, with which token and assertions."""

    caller: str
    delegates: tuple[str, str]
    targets: tuple[str, ...]
    signing_targets: tuple[str, ...]
    caller_token: str
    assertions: tuple[str, ...]


class _Api:
    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def post(self, path: str, body: dict[str, Any], *, ok: tuple[int, ...] = ()) -> Any:
        response = self.http.post(path, json=body)
        if response.status_code in ok:
            return None
        if not response.is_success:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
        return response.json()


def owner_token(base_url: str, data_dir: Path) -> str:
    """An access token for the owner, through the refresh grant of its credentials file."""
    creds = json.loads((data_dir / "credentials" / "owner.json").read_text())
    form = {
        "grant_type": "refresh_token",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "refresh_token": creds["refresh_token"],
    }
    response = httpx.post(f"{base_url}/token", data=form, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


def assertion(key: dict[str, Any], iat: int) -> str:
    """A jwt-bearer assertion (RFC 7523) as Google's libraries sign it with a key file."""
    claims = {
        "iss": key["client_email"],
        "aud": GOOGLE_TOKEN_AUDIENCE,
        "scope": CLOUD_PLATFORM,
        "iat": iat,
        "exp": iat + 3600,
    }
    headers = {"kid": key["private_key_id"]}
    return jwt.encode(claims, key["private_key"], algorithm="RS256", headers=headers)


def _policy(members: list[str]) -> dict[str, Any]:
    binding = {"role": TOKEN_CREATOR, "members": members, "condition": CONDITION}
    return {"policy": {"version": 3, "bindings": [binding]}}


def prepare(base_url: str, data_dir: Path, *, targets: int, assertions: int) -> Fixture:
    """Accounts, keys, conditional grants and tokens on a running server (REST API only)."""
    api = _Api(base_url, owner_token(base_url, data_dir))
    caller, d1, d2 = email("bench-caller"), email("bench-hop-one"), email("bench-hop-two")
    for account_id in ("bench-caller", "bench-hop-one", "bench-hop-two"):
        api.post(f"/v1/projects/{PROJECT}/serviceAccounts", {"accountId": account_id}, ok=(409,))
    created = api.post(f"/v1/projects/-/serviceAccounts/{caller}/keys", {})
    key = json.loads(base64.b64decode(created["privateKeyData"]))
    target_emails = tuple(email(bulk_account_id(i)) for i in range(targets))
    grants = [(d1, [f"serviceAccount:{caller}"]), (d2, [f"serviceAccount:{d1}"])]
    grants += [(t, [f"serviceAccount:{caller}", f"serviceAccount:{d2}"]) for t in target_emails]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda grant: api.post(
                    f"/v1/projects/-/serviceAccounts/{grant[0]}:setIamPolicy", _policy(grant[1])
                ),
                grants,
            )
        )
    now = int(SystemClock().now())
    form = {"grant_type": JWT_BEARER, "assertion": assertion(key, now)}
    response = httpx.post(f"{base_url}/token", data=form, timeout=30)
    if not response.is_success:
        raise RuntimeError(f"jwt-bearer grant failed: {response.status_code} {response.text}")
    caller_token = str(response.json()["access_token"])
    signing = target_emails[:SIGNING_TARGETS]
    # Each account's first signBlob creates its system-managed key (an RSA key generation):
    # done here, so the load measures signing, not key generation.
    caller_api = _Api(base_url, caller_token)
    for target in signing:
        caller_api.post(
            f"/v1/projects/-/serviceAccounts/{target}:signBlob", {"payload": "YmVuY2g="}
        )
    return Fixture(
        caller=caller,
        delegates=(d1, d2),
        targets=target_emails,
        signing_targets=signing,
        caller_token=caller_token,
        # Distinct (each a second older) though the server does not check for replays today.
        assertions=tuple(assertion(key, now - i) for i in range(1, assertions + 1)),
    )


def decks(fixture: Fixture, *, metadata: bool) -> dict[str, Deck]:
    """One deck per measured endpoint; metadata decks only when the server has one."""
    auth = {"Authorization": f"Bearer {fixture.caller_token}", "Content-Type": "application/json"}

    def credentials(targets: tuple[str, ...], method: str, bodies: list[dict[str, Any]]) -> Deck:
        return Deck(
            "POST",
            auth,
            [
                (
                    f"/v1/projects/-/serviceAccounts/{target}:{method}",
                    json.dumps(bodies[i % len(bodies)], separators=(",", ":")),
                )
                for i, target in enumerate(targets)
            ],
        )

    now = int(SystemClock().now())
    chain = [f"projects/-/serviceAccounts/{d}" for d in fixture.delegates]
    out = {
        "generateIdToken": credentials(
            fixture.targets, "generateIdToken", [{"audience": AUDIENCE}]
        ),
        "generateIdToken 2-hop": credentials(
            fixture.targets, "generateIdToken", [{"audience": AUDIENCE, "delegates": chain}]
        ),
        # The same request to one hot target: what per-target caching can do at best.
        "generateIdToken 1 target": credentials(
            fixture.targets[:1], "generateIdToken", [{"audience": AUDIENCE}]
        ),
        "generateAccessToken": credentials(
            fixture.targets, "generateAccessToken", [{"scope": [CLOUD_PLATFORM]}]
        ),
        "signBlob": credentials(
            fixture.signing_targets * 8,
            "signBlob",
            [
                {"payload": base64.b64encode(f"bench payload {i}".encode()).decode()}
                for i in range(64)
            ],
        ),
        "signJwt": credentials(
            fixture.signing_targets * 8,
            "signJwt",
            [
                {
                    "payload": json.dumps(
                        {"sub": "bench", "aud": AUDIENCE, "iat": now, "exp": now + 3600, "n": i}
                    )
                }
                for i in range(64)
            ],
        ),
        "/token jwt-bearer": Deck(
            "POST",
            {"Content-Type": "application/x-www-form-urlencoded"},
            [
                ("/token", urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": a}))
                for a in fixture.assertions
            ],
        ),
        "/oauth2/v3/certs": Deck("GET", {}, [("/oauth2/v3/certs", "")]),
    }
    if metadata:
        flavor = {"Metadata-Flavor": "Google"}
        prefix = "/computeMetadata/v1/instance/service-accounts/default"
        out["metadata identity"] = Deck(
            "GET",
            flavor,
            [
                (f"{prefix}/identity?audience={urllib.parse.quote(AUDIENCE)}{i}&format=full", "")
                for i in range(4)
            ],
        )
        out["metadata token"] = Deck("GET", flavor, [(f"{prefix}/token", "")])
    return out


def peer_deck(client_id: str, client_secret: str, scope: str) -> Deck:
    """node-oidc-provider's client_credentials grant, client_secret_basic."""
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return Deck(
        "POST",
        {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        [("/token", urllib.parse.urlencode({"grant_type": "client_credentials", "scope": scope}))],
    )
