"""Service accounts and their user-managed keys (IAM API v1, ``projects.serviceAccounts``).

https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts and
``projects.serviceAccounts.keys``. Like Google, the server keeps only the public half of a
user-managed key: the private key leaves the server once, inside ``privateKeyData``.

Lookups hide existence the way Google does: a caller without permission gets the same 403
whether or not the account exists; only a caller allowed to see the project's accounts learns
that one is missing (404).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import urllib.parse
from typing import Any, NoReturn

import orjson

from tokensmith.clock import Clock, to_datetime
from tokensmith.core.names import (
    Principal,
    ServiceAccountRef,
    parse_service_account_name,
    service_account_email,
    validate_account_id,
)
from tokensmith.crypto.keys import generate_rsa_key
from tokensmith.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tokensmith.services.audit import Auditor
from tokensmith.services.iam import Iam, Target, tested_permissions
from tokensmith.services.ids import new_unique_id
from tokensmith.store.base import (
    Conflict,
    KeyRecord,
    ProjectRecord,
    ServiceAccountRecord,
    Store,
)

__all__ = [
    "MAX_USER_MANAGED_KEYS",
    "UNDELETE_WINDOW",
    "Accounts",
    "account_json",
    "format_time",
]

UNDELETE_WINDOW = 30 * 86400.0
MAX_USER_MANAGED_KEYS = 10
NEVER = 253402300799.0  # 9999-12-31T23:59:59Z, Google's validBeforeTime of a key without expiry
_CREATE_FIELDS = {"accountId", "serviceAccount"}
_SA_FIELDS = {
    "displayName",
    "description",
    "name",
    "projectId",
    "uniqueId",
    "email",
    "etag",
    "oauth2ClientId",
    "disabled",
}
_PATCH_MASK = {"displayName", "description"}
_INT32 = re.compile(r"-?[0-9]{1,10}")


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with whole seconds and ``Z`` (what every Google client parses)."""
    return to_datetime(int(epoch)).strftime("%Y-%m-%dT%H:%M:%SZ")


def account_json(record: ServiceAccountRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"projects/{record.project_id}/serviceAccounts/{record.email}",
        "projectId": record.project_id,
        "uniqueId": record.unique_id,
        "email": record.email,
        "etag": record.etag,
        "oauth2ClientId": record.unique_id,
    }
    if record.display_name:
        out["displayName"] = record.display_name
    if record.description:
        out["description"] = record.description
    if record.disabled:
        out["disabled"] = True
    return out


def _key_json(account: ServiceAccountRecord, key: KeyRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f"projects/{account.project_id}/serviceAccounts/{account.email}/keys/{key.key_id}",
        "validAfterTime": format_time(key.valid_after),
        "validBeforeTime": format_time(key.valid_before),
        "keyAlgorithm": key.algorithm,
        "keyOrigin": "GOOGLE_PROVIDED",
        "keyType": key.key_type,
    }
    if key.disabled:
        out["disabled"] = True
    return out


def _check_fields(body: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
            f"'{where}': Cannot find field."
        )


def _text_field(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string.")
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{name} must be at most {limit} bytes.")
    return value


def _etag(record: ServiceAccountRecord, now: float) -> str:
    """A fresh etag for each version of an account (it changes with every write)."""
    text = "\x00".join(
        (record.unique_id, f"{now:.6f}", record.display_name, record.description, record.etag)
    )
    return base64.b64encode(hashlib.sha256(text.encode()).digest()[:8]).decode()


class Accounts:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        iam: Iam,
        auditor: Auditor,
        token_uri: str,
        base_url: str,
    ) -> None:
        self._store = store
        self._clock = clock
        self._iam = iam
        self._auditor = auditor
        self._token_uri = token_uri
        self._base_url = base_url

    # resolution ---------------------------------------------------------------------------

    def project(self, principal: Principal, project_id: str, permission: str) -> ProjectRecord:
        """A project the caller may act on; a missing one looks like a denial."""
        return self._iam.existing_project(principal, project_id, permission)

    def resolve(
        self,
        principal: Principal,
        name: str,
        permission: str,
        *,
        method: str,
        include_deleted: bool = False,
    ) -> Target:
        """The account ``name`` refers to, after checking ``permission`` on it."""
        ref = parse_service_account_name(name)
        account = self._find(ref, include_deleted=include_deleted)
        if account is None:
            self._missing(principal, ref, permission, method)
        project = self._store.get_project(account.project_id)
        assert project is not None  # foreign key
        target = Target(project, account)
        self._iam.check(principal, permission, target, method=method)
        return target

    def _find(
        self, ref: ServiceAccountRef, *, include_deleted: bool
    ) -> ServiceAccountRecord | None:
        if ref.is_unique_id:
            record = self._store.get_service_account(ref.key)
            if record is not None and record.deleted_at is not None and not include_deleted:
                record = None
        else:
            record = self._store.find_service_account(ref.key.lower())
        if record is None or ref.project not in ("-", record.project_id):
            return None
        return record

    def _may_list(self, principal: Principal, ref: ServiceAccountRef) -> bool:
        """Whether the caller may see the named project's accounts (and so learn one is missing)."""
        project = None if ref.project == "-" else self._store.get_project(ref.project)
        return (
            project is not None
            and self._iam.decide(principal, "iam.serviceAccounts.list", Target(project)).allowed
        )

    def _missing(
        self, principal: Principal, ref: ServiceAccountRef, permission: str, method: str
    ) -> NoReturn:
        if self._may_list(principal, ref):
            raise NotFound(f"Unknown service account: {ref.key}")
        self._iam.deny(
            principal,
            permission,
            f"projects/{ref.project}/serviceAccounts/{ref.key}",
            method=method,
            reason="no such service account",
        )

    def test_permissions(self, principal: Principal, name: str, permissions: object) -> list[str]:
        """testIamPermissions on an account; like Google's, it needs no permission of its own.

        A missing account answers as one on which the caller holds nothing (so the answer
        does not reveal existence), except to a caller who may list the project's accounts,
        who gets the 404 that ``get`` would give.
        """
        ref = parse_service_account_name(name)
        tested_permissions(permissions, account=True)
        account = self._find(ref, include_deleted=False)
        if account is None:
            if self._may_list(principal, ref):
                raise NotFound(f"Unknown service account: {ref.key}")
            return []
        project = self._store.get_project(account.project_id)
        assert project is not None  # foreign key
        return self._iam.test_permissions(principal, Target(project, account), permissions)

    # service accounts ---------------------------------------------------------------------

    def create(self, principal: Principal, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        _check_fields(body, _CREATE_FIELDS, "request")
        project = self.project(principal, project_id, "iam.serviceAccounts.create")
        self._iam.check(
            principal, "iam.serviceAccounts.create", Target(project), method="CreateServiceAccount"
        )
        account_id = validate_account_id(body.get("accountId"))  # type: ignore[arg-type]
        details = body.get("serviceAccount") or {}
        if not isinstance(details, dict):
            raise InvalidArgument("serviceAccount must be a JSON object.")
        _check_fields(details, _SA_FIELDS, "service_account")
        now = self._clock.now()
        record = ServiceAccountRecord(
            unique_id=new_unique_id(),
            project_id=project.project_id,
            account_id=account_id,
            email=service_account_email(account_id, project.project_id),
            display_name=_text_field(details, "displayName", 100),
            description=_text_field(details, "description", 256),
            disabled=False,
            created_at=now,
        )
        record = dataclasses.replace(record, etag=_etag(record, now))
        try:
            self._store.insert_service_account(record)
        except Conflict:
            raise AlreadyExists(
                f"Service account {account_id} already exists within project "
                f"projects/{project.project_id}."
            ) from None
        self._audit_change(principal, "CreateServiceAccount", record)
        return account_json(record)

    def get(self, principal: Principal, name: str) -> dict[str, Any]:
        target = self.resolve(
            principal, name, "iam.serviceAccounts.get", method="GetServiceAccount"
        )
        assert target.account is not None
        return account_json(target.account)

    def list_accounts(
        self, principal: Principal, project_id: str, page_size: object, page_token: object
    ) -> dict[str, Any]:
        project = self.project(principal, project_id, "iam.serviceAccounts.list")
        self._iam.check(
            principal, "iam.serviceAccounts.list", Target(project), method="ListServiceAccounts"
        )
        size = _page_size(page_size)
        after = _decode_page_token(page_token)
        rows = list(
            self._store.list_service_accounts(project.project_id, after=after, limit=size + 1)
        )
        out: dict[str, Any] = {"accounts": [account_json(r) for r in rows[:size]]}
        if len(rows) > size:
            out["nextPageToken"] = base64.urlsafe_b64encode(
                rows[size - 1].unique_id.encode()
            ).decode()
        if not out["accounts"]:
            del out["accounts"]
        return out

    def patch(self, principal: Principal, name: str, body: dict[str, Any]) -> dict[str, Any]:
        _check_fields(body, {"serviceAccount", "updateMask"}, "request")
        target = self.resolve(
            principal, name, "iam.serviceAccounts.update", method="PatchServiceAccount"
        )
        assert target.account is not None
        details = body.get("serviceAccount")
        if not isinstance(details, dict):
            raise InvalidArgument("serviceAccount is required and must be a JSON object.")
        _check_fields(details, _SA_FIELDS, "service_account")
        mask_raw = body.get("updateMask")
        if not isinstance(mask_raw, str) or not mask_raw.strip():
            raise InvalidArgument('updateMask is required, e.g. "displayName,description".')
        mask = {f.strip() for f in mask_raw.split(",") if f.strip()}
        if not mask <= _PATCH_MASK:
            raise InvalidArgument(
                f"updateMask may only name displayName and description; got {mask_raw!r}."
            )
        changes: dict[str, Any] = {}
        if "displayName" in mask:
            changes["display_name"] = _text_field(details, "displayName", 100)
        if "description" in mask:
            changes["description"] = _text_field(details, "description", 256)
        now = self._clock.now()
        record = dataclasses.replace(target.account, **changes)
        record = dataclasses.replace(record, etag=_etag(record, now))
        self._store.update_service_account(record)
        self._audit_change(principal, "PatchServiceAccount", record)
        return account_json(record)

    def delete(self, principal: Principal, name: str) -> dict[str, Any]:
        target = self.resolve(
            principal, name, "iam.serviceAccounts.delete", method="DeleteServiceAccount"
        )
        assert target.account is not None
        record = dataclasses.replace(target.account, deleted_at=self._clock.now())
        self._store.update_service_account(record)
        self._audit_change(principal, "DeleteServiceAccount", record)
        return {}

    def undelete(self, principal: Principal, name: str) -> dict[str, Any]:
        ref = parse_service_account_name(name)
        if not ref.is_unique_id:
            raise InvalidArgument(
                "Undelete needs the account's unique id: "
                "projects/-/serviceAccounts/{ACCOUNT_UNIQUE_ID}."
            )
        target = self.resolve(
            principal,
            name,
            "iam.serviceAccounts.undelete",
            method="UndeleteServiceAccount",
            include_deleted=True,
        )
        account = target.account
        assert account is not None
        if account.deleted_at is None:
            return {"restoredAccount": account_json(account)}
        if self._clock.now() - account.deleted_at > UNDELETE_WINDOW:
            raise NotFound(
                f"Service account {account.unique_id} was deleted more than 30 days ago and "
                "can no longer be undeleted."
            )
        restored = dataclasses.replace(account, deleted_at=None)
        try:
            self._store.update_service_account(restored)
        except Conflict:
            raise FailedPrecondition(
                f"Cannot undelete: the email {account.email} is used by a newer service account."
            ) from None
        self._audit_change(principal, "UndeleteServiceAccount", restored)
        return {"restoredAccount": account_json(restored)}

    def set_disabled(self, principal: Principal, name: str, disabled: bool) -> dict[str, Any]:
        verb = "disable" if disabled else "enable"
        target = self.resolve(
            principal,
            name,
            f"iam.serviceAccounts.{verb}",
            method=f"{verb.capitalize()}ServiceAccount",
        )
        assert target.account is not None
        record = dataclasses.replace(target.account, disabled=disabled)
        self._store.update_service_account(record)
        self._audit_change(principal, f"{verb.capitalize()}ServiceAccount", record)
        return {}

    def _audit_change(
        self, principal: Principal, method: str, record: ServiceAccountRecord
    ) -> None:
        self._auditor.record(
            method=method,
            principal=principal.member,
            resource=f"projects/{record.project_id}/serviceAccounts/{record.email}",
            permission="",
            outcome="granted",
            detail={"uniqueId": record.unique_id},
        )

    # keys ---------------------------------------------------------------------------------

    def create_key(self, principal: Principal, name: str, body: dict[str, Any]) -> dict[str, Any]:
        _check_fields(body, {"privateKeyType", "keyAlgorithm"}, "request")
        target = self.resolve(
            principal, name, "iam.serviceAccountKeys.create", method="CreateServiceAccountKey"
        )
        account = target.account
        assert account is not None
        key_type = body.get("privateKeyType") or "TYPE_GOOGLE_CREDENTIALS_FILE"
        if key_type != "TYPE_GOOGLE_CREDENTIALS_FILE":
            raise InvalidArgument(
                f"privateKeyType {key_type!r} is not supported; use TYPE_GOOGLE_CREDENTIALS_FILE."
            )
        algorithm = body.get("keyAlgorithm") or "KEY_ALG_RSA_2048"
        if algorithm != "KEY_ALG_RSA_2048":
            raise InvalidArgument(
                f"keyAlgorithm {algorithm!r} is not supported; use KEY_ALG_RSA_2048."
            )
        live = [k for k in self._store.list_keys(account.unique_id) if k.key_type == "USER_MANAGED"]
        if len(live) >= MAX_USER_MANAGED_KEYS:
            raise FailedPrecondition(
                f"Precondition check failed: a service account can have at most "
                f"{MAX_USER_MANAGED_KEYS} user-managed keys; delete one first."
            )
        now = self._clock.now()
        key = generate_rsa_key()
        record = KeyRecord(
            key_id=key.key_id,
            account_unique_id=account.unique_id,
            key_type="USER_MANAGED",
            algorithm=algorithm,
            public_key_pem=key.public.pem,
            certificate_pem=key.self_signed_certificate(account.email, now, NEVER),
            private_key_sealed=None,
            valid_after=now,
            valid_before=NEVER,
            sign_from=None,
            sign_until=None,
            disabled=False,
            deleted_at=None,
            created_at=now,
        )
        self._store.insert_key(record)
        self._auditor.record(
            method="CreateServiceAccountKey",
            principal=principal.member,
            resource=f"projects/{account.project_id}/serviceAccounts/{account.email}",
            permission="iam.serviceAccountKeys.create",
            outcome="granted",
            detail={"keyId": key.key_id},
        )
        key_file = {
            "type": "service_account",
            "project_id": account.project_id,
            "private_key_id": key.key_id,
            "private_key": key.pkcs8_pem(),
            "client_email": account.email,
            "client_id": account.unique_id,
            "auth_uri": f"{self._base_url}/o/oauth2/auth",
            "token_uri": self._token_uri,
            "auth_provider_x509_cert_url": f"{self._base_url}/oauth2/v1/certs",
            "client_x509_cert_url": (
                f"{self._base_url}/robot/v1/metadata/x509/{urllib.parse.quote(account.email)}"
            ),
            "universe_domain": "googleapis.com",
        }
        out = _key_json(account, record)
        out["privateKeyType"] = "TYPE_GOOGLE_CREDENTIALS_FILE"
        out["privateKeyData"] = base64.b64encode(
            orjson.dumps(key_file, option=orjson.OPT_INDENT_2)
        ).decode()
        return out

    def list_keys(self, principal: Principal, name: str, key_types: list[str]) -> dict[str, Any]:
        target = self.resolve(
            principal, name, "iam.serviceAccountKeys.list", method="ListServiceAccountKeys"
        )
        account = target.account
        assert account is not None
        for key_type in key_types:
            if key_type not in ("USER_MANAGED", "SYSTEM_MANAGED", "KEY_TYPE_UNSPECIFIED"):
                raise InvalidArgument(f"Invalid keyTypes value {key_type!r}.")
        wanted = set(key_types) - {"KEY_TYPE_UNSPECIFIED"}
        keys = [
            k
            for k in self._store.list_keys(account.unique_id)
            if not wanted or k.key_type in wanted
        ]
        return {"keys": [_key_json(account, k) for k in keys]} if keys else {}

    def _key(
        self, principal: Principal, key_name: str, permission: str, method: str
    ) -> tuple[ServiceAccountRecord, KeyRecord]:
        account_name, sep, key_id = key_name.rpartition("/keys/")
        if not sep or not key_id or "/" in key_id:
            raise InvalidArgument(
                f"Invalid key name {key_name[:200]!r}: expected "
                "projects/{PROJECT}/serviceAccounts/{ACCOUNT}/keys/{KEY_ID}."
            )
        target = self.resolve(principal, account_name, permission, method=method)
        account = target.account
        assert account is not None
        key = self._store.get_key(key_id)
        if key is None or key.account_unique_id != account.unique_id or key.deleted_at is not None:
            raise NotFound(f"Service account key {key_id} does not exist.")
        return account, key

    def get_key(self, principal: Principal, key_name: str, public_key_type: str) -> dict[str, Any]:
        account, key = self._key(
            principal, key_name, "iam.serviceAccountKeys.get", "GetServiceAccountKey"
        )
        out = _key_json(account, key)
        # Google's default is TYPE_NONE: the public key only comes back when asked for.
        if public_key_type == "TYPE_X509_PEM_FILE":
            out["publicKeyData"] = base64.b64encode(key.certificate_pem.encode()).decode()
        elif public_key_type == "TYPE_RAW_PUBLIC_KEY":
            out["publicKeyData"] = base64.b64encode(key.public_key_pem.encode()).decode()
        elif public_key_type not in ("", "TYPE_NONE"):
            raise InvalidArgument(f"Invalid publicKeyType {public_key_type!r}.")
        return out

    def delete_key(self, principal: Principal, key_name: str) -> dict[str, Any]:
        account, key = self._key(
            principal, key_name, "iam.serviceAccountKeys.delete", "DeleteServiceAccountKey"
        )
        self._store.update_key(dataclasses.replace(key, deleted_at=self._clock.now()))
        self._audit_key(principal, "DeleteServiceAccountKey", account, key)
        return {}

    def set_key_disabled(
        self, principal: Principal, key_name: str, disabled: bool
    ) -> dict[str, Any]:
        verb = "disable" if disabled else "enable"
        account, key = self._key(
            principal,
            key_name,
            f"iam.serviceAccountKeys.{verb}",
            f"{verb.capitalize()}ServiceAccountKey",
        )
        self._store.update_key(dataclasses.replace(key, disabled=disabled))
        self._audit_key(principal, f"{verb.capitalize()}ServiceAccountKey", account, key)
        return {}

    def _audit_key(
        self, principal: Principal, method: str, account: ServiceAccountRecord, key: KeyRecord
    ) -> None:
        self._auditor.record(
            method=method,
            principal=principal.member,
            resource=f"projects/{account.project_id}/serviceAccounts/{account.email}",
            permission="",
            outcome="granted",
            detail={"keyId": key.key_id},
        )


def _page_size(value: object) -> int:
    if value in (None, ""):
        return 20
    text = str(value)
    # pageSize is an int32 on the wire; Python's int() would also take "١" or "1_000".
    if not _INT32.fullmatch(text) or int(text) >= 2**31:
        raise InvalidArgument(f"pageSize must be an integer, got {text[:20]!r}.")
    size = int(text)
    if size < 0:
        raise InvalidArgument("pageSize must not be negative.")
    return min(size or 20, 100)


def _decode_page_token(value: object) -> str:
    if value in (None, ""):
        return ""
    try:
        decoded = base64.urlsafe_b64decode(str(value).encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("Invalid pageToken.") from None
    if not decoded.isdigit():
        raise InvalidArgument("Invalid pageToken.")
    return decoded
