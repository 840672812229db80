"""First start: the default project, its owner, the issuer key and the owner's credentials.

Idempotent: every step checks before it creates, so a restart changes nothing but the
``token_uri`` in ``credentials/owner.json`` (the server may listen elsewhere now). The owner's
file is an ``authorized_user`` application-default-credentials file that Google's libraries
and gcloud load as they are; it is written with mode 0600 and never logged.

Like a Compute Engine project, the default project also gets its default compute account
``PROJECT_NUMBER-compute@developer.gserviceaccount.com`` (the metadata server's attached account
unless told otherwise), on whose policy the Compute Engine service agent
``service-PROJECT_NUMBER@compute-system.iam.gserviceaccount.com`` holds TokenCreator: the
metadata server mints as that agent. A live default account is recreated at start when absent
(disable it to take it out of use); the agent's grant is written only when the account has no
policy yet, so an operator's later edits stand.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import orjson

from tokensmith.clock import Clock
from tokensmith.core.names import Principal, validate_email, validate_project_id
from tokensmith.core.policy import Binding, Policy, policy_from_stored, policy_to_json
from tokensmith.services.iam import EMPTY_ETAG, Iam, Target
from tokensmith.services.ids import hash_secret, new_project_number, new_secret, new_unique_id
from tokensmith.services.keyring import IssuerKeyring
from tokensmith.services.oauth import DEFAULT_USER_SCOPES, OAuth
from tokensmith.store.base import (
    Conflict,
    OAuthClientRecord,
    PolicyRecord,
    ProjectRecord,
    ServiceAccountRecord,
    Store,
    UserRecord,
)

__all__ = [
    "TOKEN_CREATOR",
    "Bootstrap",
    "compute_default_account",
    "compute_service_agent",
    "ensure_token_creator",
    "write_private_json",
]

log = logging.getLogger("tokensmith.bootstrap")

TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
COMPUTE_DEFAULT_DISPLAY_NAME = "Compute Engine default service account"


def compute_default_account(project_number: str) -> str:
    """The email of a project's default compute account, as Compute Engine names it."""
    return f"{project_number}-compute@developer.gserviceaccount.com"


def compute_service_agent(project_number: str) -> Principal:
    """The Compute Engine service agent: the principal the metadata server mints as."""
    return Principal(
        "serviceAccount", f"service-{project_number}@compute-system.iam.gserviceaccount.com"
    )


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
        self._ensure_compute_account(project)
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

    def _ensure_compute_account(self, project: ProjectRecord) -> None:
        email = compute_default_account(project.project_number)
        account = self._store.find_service_account(email)
        if account is None:
            now = self._clock.now()
            unique_id = new_unique_id()
            digest = hashlib.sha256(f"{unique_id}:{now:.6f}".encode()).digest()[:8]
            account = ServiceAccountRecord(
                unique_id=unique_id,
                project_id=project.project_id,
                account_id=f"{project.project_number}-compute",
                email=email,
                display_name=COMPUTE_DEFAULT_DISPLAY_NAME,
                description="",
                disabled=False,
                created_at=now,
                etag=base64.b64encode(digest).decode(),
            )
            try:
                self._store.insert_service_account(account)
            except Conflict:  # another node created it first; use theirs
                return
        target = Target(project, account)
        if self._store.get_policy(target.policy_key) is None:
            agent = compute_service_agent(project.project_number).member
            if ensure_token_creator(self._store, self._clock, target, agent):
                log.info("granted %s %s on %s", agent, TOKEN_CREATOR, target.name)

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


def ensure_token_creator(store: Store, clock: Clock, target: Target, member: str) -> bool:
    """Add ``member`` to TokenCreator on ``target``'s own policy; False if already there.

    A compare-and-set write as ``setIamPolicy`` does it; a lost race is retried once on the
    fresh policy.
    """
    for _ in range(2):
        record = store.get_policy(target.policy_key)
        current = (
            policy_from_stored(orjson.loads(record.policy_json), record.etag)
            if record is not None
            else Policy(etag=EMPTY_ETAG)
        )
        bindings = list(current.bindings)
        for index, binding in enumerate(bindings):
            if binding.role == TOKEN_CREATOR and binding.condition is None:
                if member in binding.members:
                    return False
                bindings[index] = dataclasses.replace(binding, members=(*binding.members, member))
                break
        else:
            bindings.append(Binding(role=TOKEN_CREATOR, members=(member,)))
        stored = policy_to_json(dataclasses.replace(current, bindings=tuple(bindings)), 3)
        stored.pop("etag", None)
        body = orjson.dumps(stored).decode()
        revision = (record.revision if record is not None else 0) + 1
        try:
            store.put_policy(
                PolicyRecord(
                    target.policy_key, body, hash_secret(body)[:12], revision, clock.now()
                ),
                expected_etag=current.etag,
            )
        except Conflict:
            continue
        return True
    return False
