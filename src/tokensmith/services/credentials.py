"""The IAM Service Account Credentials API v1: short-lived credentials for service accounts.

https://cloud.google.com/iam/docs/reference/credentials/rest — ``generateAccessToken``,
``generateIdToken``, ``signBlob``, ``signJwt``; direct and delegated requests.

Authorization follows Google's rules exactly (COMPAT.md B.1 "Delegation chain"): for a chain
caller → d1 → … → dn → target, the caller needs ``iam.serviceAccounts.implicitDelegation`` on
d1, each di on d(i+1), and dn (or the caller when there are no delegates) the method's
permission on the target. Missing, disabled and deleted accounts anywhere in the chain are
refused with the same 403 as a denial. Every request — granted or denied — is written to the
audit log before the response leaves; if the record cannot be written, no credential leaves.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any, NoReturn

import orjson

from tokensmith.clock import Clock
from tokensmith.core.lifetimes import SIGN_JWT_MAX_AHEAD, access_token_lifetime
from tokensmith.core.names import (
    Principal,
    ServiceAccountRef,
    parse_delegate,
    parse_service_account_name,
)
from tokensmith.crypto import jwt
from tokensmith.errors import InvalidArgument, PermissionDenied
from tokensmith.services.accounts import format_time
from tokensmith.services.audit import Auditor
from tokensmith.services.authn import Caller
from tokensmith.services.directory import Directory
from tokensmith.services.iam import Iam, Target, denied_message
from tokensmith.services.orgpolicy import OrgPolicies
from tokensmith.services.sakeys import AccountKeys
from tokensmith.services.tokens import TokenMinter
from tokensmith.store.base import ServiceAccountRecord, Store

__all__ = ["MAX_AUDIENCE_LENGTH", "MAX_DELEGATES", "Credentials"]

MAX_DELEGATES = 10
MAX_AUDIENCE_LENGTH = 2048
SERVICE = "iamcredentials.googleapis.com"
IMPLICIT_DELEGATION = "iam.serviceAccounts.implicitDelegation"

_FIELDS = {
    "generateAccessToken": {"delegates", "scope", "lifetime"},
    "generateIdToken": {
        "delegates",
        "audience",
        "includeEmail",
        "useEmailAzp",
        "organizationNumberIncluded",
    },
    "signBlob": {"delegates", "payload"},
    "signJwt": {"delegates", "payload"},
}
_PERMISSIONS = {
    "generateAccessToken": "iam.serviceAccounts.getAccessToken",
    "generateIdToken": "iam.serviceAccounts.getOpenIdToken",
    "signBlob": "iam.serviceAccounts.signBlob",
    "signJwt": "iam.serviceAccounts.signJwt",
}


@dataclasses.dataclass(frozen=True)
class _Grant:
    """An authorized request: the target account and the chain that reached it."""

    target: ServiceAccountRecord
    chain: tuple[str, ...]  # members, caller first, target excluded


def _flag(body: Mapping[str, Any], name: str) -> bool:
    """A boolean field as clients send it: JSON true/false, or the strings "true"/"false"."""
    value = body.get(name)
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(f"{name} must be a boolean, got {str(value)[:40]!r}.")


class Credentials:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        iam: Iam,
        directory: Directory,
        minter: TokenMinter,
        account_keys: AccountKeys,
        orgpolicy: OrgPolicies,
        auditor: Auditor,
    ) -> None:
        self._store = store
        self._clock = clock
        self._iam = iam
        self._directory = directory
        self._minter = minter
        self._keys = account_keys
        self._orgpolicy = orgpolicy
        self._auditor = auditor

    # the four methods ---------------------------------------------------------------------

    def generate_access_token(
        self, caller: Caller, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        method = "generateAccessToken"
        self._check_fields(body, method)
        scopes = self._scopes(body.get("scope"))
        grant = self._authorize(caller, name, body, method)
        extension = self._orgpolicy.lifetime_extension_allowed(
            grant.target.project_id, grant.target.email
        )
        try:
            lifetime = access_token_lifetime(body.get("lifetime"), extension_allowed=extension)
        except InvalidArgument:
            self._audit(method, grant, "error", {"reason": "invalid lifetime"})
            raise
        principal = Principal("serviceAccount", grant.target.email, grant.target.unique_id)
        token = self._minter.access_token(
            principal,
            scopes,
            lifetime=lifetime,
            client_id=grant.target.unique_id,
            delegation=grant.chain,
        )
        self._audit(
            method,
            grant,
            "granted",
            {"scopes": list(scopes), "lifetime": lifetime, "tokenId": token.token_id},
        )
        return {"accessToken": token.token, "expireTime": format_time(token.expires_at)}

    def generate_id_token(
        self,
        caller: Caller,
        name: str,
        body: Mapping[str, Any],
        *,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``extra_claims`` (in-process callers only, e.g. the metadata server's
        ``google.compute_engine``) are merged into the token's claims; a ``google`` object is
        merged key by key with the one ``organizationNumberIncluded`` adds."""
        method = "generateIdToken"
        self._check_fields(body, method)
        audience = body.get("audience")
        if not isinstance(audience, str) or not audience.strip():
            raise InvalidArgument("audience is required: a non-empty string.")
        if len(audience) > MAX_AUDIENCE_LENGTH:
            raise InvalidArgument(
                f"audience is too long ({len(audience)} characters; at most {MAX_AUDIENCE_LENGTH})."
            )
        include_email = _flag(body, "includeEmail")
        use_email_azp = _flag(body, "useEmailAzp")
        with_org = _flag(body, "organizationNumberIncluded")
        grant = self._authorize(caller, name, body, method)
        target = grant.target
        token = self._minter.id_token(
            audience=audience,
            subject=target.unique_id,
            email=target.email,
            include_email=include_email,
            authorized_party=target.email if use_email_azp else target.unique_id,
            extra=_id_token_extra(with_org, extra_claims),
        )
        self._audit(method, grant, "granted", {"audience": audience, "includeEmail": include_email})
        return {"token": token}

    def sign_blob(self, caller: Caller, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        method = "signBlob"
        self._check_fields(body, method)
        payload = body.get("payload")
        if not isinstance(payload, str) or not payload:
            raise InvalidArgument("payload is required: the bytes to sign, base64-encoded.")
        data = _b64decode(payload)
        grant = self._authorize(caller, name, body, method)
        key = self._keys.signer(grant.target)
        signature = key.private.sign(data)
        self._audit(method, grant, "granted", {"keyId": key.key_id, "bytes": len(data)})
        return {"keyId": key.key_id, "signedBlob": base64.b64encode(signature).decode()}

    def sign_jwt(self, caller: Caller, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        method = "signJwt"
        self._check_fields(body, method)
        payload = body.get("payload")
        if not isinstance(payload, str) or not payload.strip():
            raise InvalidArgument("payload is required: a JSON object of JWT claims, as a string.")
        self._check_claims(payload)
        grant = self._authorize(caller, name, body, method)
        key = self._keys.signer(grant.target)
        header = orjson.dumps({"alg": "RS256", "kid": key.key_id, "typ": "JWT"})
        # The payload is signed verbatim, as the caller wrote it (not re-serialized).
        signing_input = jwt.b64url_encode(header) + "." + jwt.b64url_encode(payload.encode())
        signature = key.private.sign(signing_input.encode("ascii"))
        self._audit(method, grant, "granted", {"keyId": key.key_id})
        return {
            "keyId": key.key_id,
            "signedJwt": signing_input + "." + jwt.b64url_encode(signature),
        }

    # validation ---------------------------------------------------------------------------

    @staticmethod
    def _check_fields(body: Mapping[str, Any], method: str) -> None:
        unknown = set(body) - _FIELDS[method]
        if unknown:
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": '
                "Cannot find field."
            )

    @staticmethod
    def _scopes(raw: object) -> tuple[str, ...]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise InvalidArgument("scope is required: a non-empty list of OAuth scopes.")
        if not all(isinstance(s, str) and s.strip() and " " not in s for s in raw):
            raise InvalidArgument("scope: every entry must be a non-empty scope string.")
        return tuple(dict.fromkeys(raw))

    def _check_claims(self, payload: str) -> None:
        try:
            claims = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidArgument("payload must be a JSON object of JWT claims.") from None
        if not isinstance(claims, dict):
            raise InvalidArgument("payload must be a JSON object of JWT claims.")
        if "exp" not in claims:
            return
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int):
            raise InvalidArgument("payload: exp must be an integer timestamp (seconds).")
        now = self._clock.now()
        if exp < now:
            raise InvalidArgument("payload: exp is in the past.")
        if exp > now + SIGN_JWT_MAX_AHEAD:
            raise InvalidArgument("payload: exp is more than 12 hours in the future.")

    # authorization ------------------------------------------------------------------------

    def _delegates(self, raw: object) -> list[ServiceAccountRef]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise InvalidArgument(
                "delegates must be a list of projects/-/serviceAccounts/{ACCOUNT} names."
            )
        if len(raw) > MAX_DELEGATES:
            raise InvalidArgument(
                f"delegates: a delegation chain has at most {MAX_DELEGATES} accounts "
                f"(got {len(raw)})."
            )
        return [parse_delegate(item) for item in raw]

    def _authorize(self, caller: Caller, name: str, body: Mapping[str, Any], method: str) -> _Grant:
        permission = _PERMISSIONS[method]
        ref = parse_service_account_name(name)
        refs = self._delegates(body.get("delegates"))
        principal = caller.principal
        target = self._directory.service_account(ref)
        delegates: list[ServiceAccountRecord] = []
        for delegate_ref in refs:
            account = self._directory.service_account(delegate_ref)
            if account is None or account.disabled:
                self._refuse(
                    principal,
                    method,
                    IMPLICIT_DELEGATION,
                    delegate_ref.key,
                    f"delegate {delegate_ref.key} does not exist or is disabled",
                    refs,
                )
            delegates.append(account)
        self._reject_loops(principal, delegates, target)
        if target is None or target.disabled:
            self._refuse(
                principal,
                method,
                permission,
                ref.key,
                f"target {ref.key} does not exist or is disabled",
                refs,
            )
        actor = principal
        for account in delegates:
            self._require(actor, IMPLICIT_DELEGATION, account, method, refs)
            actor = Principal("serviceAccount", account.email, account.unique_id)
        self._require(actor, permission, target, method, refs)
        chain = (principal.member, *(f"serviceAccount:{d.email}" for d in delegates))
        return _Grant(target=target, chain=chain)

    @staticmethod
    def _reject_loops(
        principal: Principal,
        delegates: list[ServiceAccountRecord],
        target: ServiceAccountRecord | None,
    ) -> None:
        """A delegate may not appear twice, be the caller, or be the target. (The caller may
        be the target: an account minting its own ID token with a grant on itself is common.)"""
        seen: set[str] = {principal.email} if principal.is_service_account else set()
        for account in [*delegates, *([target] if target else [])]:
            if account.email in seen and not (account is target and not delegates):
                raise InvalidArgument(
                    f"delegates: the delegation chain contains a loop ({account.email} appears "
                    "more than once)."
                )
            seen.add(account.email)

    def _require(
        self,
        actor: Principal,
        permission: str,
        account: ServiceAccountRecord,
        method: str,
        refs: list[ServiceAccountRef],
    ) -> None:
        project = self._store.get_project(account.project_id)
        assert project is not None  # foreign key
        decision = self._iam.decide(actor, permission, Target(project, account), SERVICE)
        if not decision.allowed:
            self._refuse(
                actor,
                method,
                permission,
                account.email,
                f"{actor.member} lacks {permission} on {account.email}",
                refs,
            )

    def _refuse(
        self,
        actor: Principal,
        method: str,
        permission: str,
        resource: str,
        reason: str,
        refs: list[ServiceAccountRef],
    ) -> NoReturn:
        self._auditor.denied(
            method=method,
            principal=actor.member,
            resource=f"projects/-/serviceAccounts/{resource}",
            permission=permission,
            reason=reason + (f" (delegates: {[r.key for r in refs]})" if refs else ""),
        )
        raise PermissionDenied(denied_message(permission), permission=permission)

    def _audit(self, method: str, grant: _Grant, outcome: str, detail: dict[str, Any]) -> None:
        detail = {"chain": list(grant.chain[1:]), **detail} if len(grant.chain) > 1 else detail
        self._auditor.record(
            method=method,
            principal=grant.chain[0],
            resource=f"projects/{grant.target.project_id}/serviceAccounts/{grant.target.email}",
            permission=_PERMISSIONS[method],
            outcome=outcome,
            detail=detail,
        )


def _id_token_extra(
    with_org: bool, extra_claims: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    extra: dict[str, Any] = dict(extra_claims or {})
    if with_org:
        # A project here belongs to no organization: Google sends null then.
        extra["google"] = {**extra.get("google", {}), "organization_number": None}
    return extra or None


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (Google's JSON accepts both alphabets)."""
    cleaned = text.strip()
    alphabet = cleaned.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(alphabet + "=" * (-len(alphabet) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("payload is not valid base64.") from None
