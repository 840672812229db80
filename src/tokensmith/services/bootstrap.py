"""First start: the default project, its owner, the issuer key and the owner's credentials.

Idempotent: every step checks before it creates, so a restart changes nothing but the
``token_uri`` in ``credentials/owner.json`` (the server may listen elsewhere now). The owner's
file is an ``authorized_user`` application-default-credentials file that Google's libraries
and gcloud load as they are; it is written with mode 0600 and never logged.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import orjson

from tokensmith.clock import Clock
from tokensmith.core.names import validate_email, validate_project_id
from tokensmith.services.iam import EMPTY_ETAG, Iam, Target
from tokensmith.services.ids import hash_secret, new_project_number, new_secret, new_unique_id
from tokensmith.services.keyring import IssuerKeyring
from tokensmith.services.oauth import DEFAULT_USER_SCOPES, OAuth
from tokensmith.store.base import (
    Conflict,
    OAuthClientRecord,
    PolicyRecord,
    ProjectRecord,
    Store,
    UserRecord,
)

__all__ = ["Bootstrap", "write_private_json"]


def write_private_json(path: Path, content: dict[str, object]) -> None:
    """Write ``content`` to ``path`` atomically with mode 0600 (the file holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(content, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Bootstrap:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        iam: Iam,
        keyring: IssuerKeyring,
        oauth: OAuth,
    ) -> None:
        self._store = store
        self._clock = clock
        self._iam = iam
        self._keyring = keyring
        self._oauth = oauth

    def run(
        self, *, project_id: str, owner_email: str, credentials_path: Path, token_uri: str
    ) -> ProjectRecord:
        validate_project_id(project_id)
        validate_email(owner_email, field="owner email")
        owner_email = owner_email.lower()
        project = self._ensure_project(project_id)
        self._ensure_owner(project, owner_email)
        self._keyring.ensure()
        self._ensure_credentials(owner_email, credentials_path, token_uri)
        return project

    def _ensure_project(self, project_id: str) -> ProjectRecord:
        existing = self._store.get_project(project_id)
        if existing is not None:
            return existing
        record = ProjectRecord(project_id, new_project_number(), project_id, self._clock.now())
        self._store.insert_project(record)
        return record

    def _ensure_owner(self, project: ProjectRecord, owner_email: str) -> None:
        if self._store.get_user(owner_email) is None:
            self._store.insert_user(
                UserRecord(owner_email, new_unique_id(), False, self._clock.now())
            )
        key = Target(project).policy_key
        if self._store.get_policy(key) is not None:
            return  # the operator's policy stands, even if it has since changed the owner
        body = orjson.dumps(
            {
                "version": 1,
                "bindings": [{"role": "roles/owner", "members": [f"user:{owner_email}"]}],
            }
        ).decode()
        # Another node may bootstrap the same project at the same moment; its policy stands.
        with contextlib.suppress(Conflict):
            self._store.put_policy(
                PolicyRecord(key, body, hash_secret(body)[:12], 1, self._clock.now()),
                expected_etag=EMPTY_ETAG,
            )

    def _ensure_credentials(self, owner_email: str, path: Path, token_uri: str) -> None:
        if path.exists():
            content = json.loads(path.read_text())
            if content.get("token_uri") != token_uri:
                content["token_uri"] = token_uri
                write_private_json(path, content)
            return
        client_id = f"{new_unique_id()}.apps.tokensmith.local"
        client_secret = new_secret("TS-", 24)
        self._store.insert_oauth_client(
            OAuthClientRecord(
                client_id, hash_secret(client_secret), "tokensmith owner", self._clock.now()
            )
        )
        refresh_token = self._oauth.issue_refresh_token(owner_email, client_id, DEFAULT_USER_SCOPES)
        write_private_json(
            path,
            {
                "type": "authorized_user",
                "client_id": client_id,
                "client_secret": client_secret,
                "refresh_token": refresh_token,
                "token_uri": token_uri,
                "account": owner_email,
                "universe_domain": "googleapis.com",
            },
        )
