"""IAM: effective policies, permission checks, and get/set/testIamPermissions.

A service account's effective policy is its own policy plus its project's (inheritance);
a project's is its own. Checks are deny-by-default and every denial is audited with the
principal, the permission and the resource. Policy writes are compare-and-set on the etag:
a stale etag is ``ABORTED`` with Google's text, an omitted etag overwrites.
https://cloud.google.com/iam/docs/reference/rest/v1/Policy
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any, NoReturn

import orjson

from tokensmith.clock import Clock, to_datetime
from tokensmith.core.conditions import ConditionContext
from tokensmith.core.names import Principal
from tokensmith.core.policy import (
    Decision,
    Policy,
    decide,
    parse_policy,
    policy_from_stored,
    policy_to_json,
)
from tokensmith.core.roles import PROJECT_PERMISSIONS, SERVICE_ACCOUNT_PERMISSIONS
from tokensmith.errors import Aborted, FailedPrecondition, InvalidArgument, PermissionDenied
from tokensmith.services.audit import Auditor
from tokensmith.store.base import Conflict, PolicyRecord, ProjectRecord, ServiceAccountRecord, Store

__all__ = [
    "CONCURRENT_POLICY_CHANGES",
    "EMPTY_ETAG",
    "Iam",
    "Target",
    "denied_message",
    "tested_permissions",
]

EMPTY_ETAG = "ACAB"
CONCURRENT_POLICY_CHANGES = (
    "There were concurrent policy changes. Please retry the whole read-modify-write with "
    "exponential backoff."
)
_PARSED_CACHE_SIZE = 100_000
_EMPTY = Policy(etag=EMPTY_ETAG)
_MASK_FIELDS = {"bindings", "etag", "auditConfigs", "version"}


def denied_message(permission: str) -> str:
    """Google's text for a denial that does not reveal whether the resource exists."""
    if permission.startswith("iam."):
        return f"Permission '{permission}' denied on resource (or it may not exist)."
    return "The caller does not have permission"


@dataclasses.dataclass(frozen=True)
class Target:
    """A resource that carries a policy: a project, or a service account in it."""

    project: ProjectRecord
    account: ServiceAccountRecord | None = None

    @property
    def policy_key(self) -> str:
        base = f"projects/{self.project.project_id}"
        if self.account is None:
            return base
        return f"{base}/serviceAccounts/{self.account.unique_id}"

    @property
    def name(self) -> str:
        """The resource name seen by conditions and logs."""
        base = f"projects/{self.project.project_id}"
        if self.account is None:
            return base
        return f"{base}/serviceAccounts/{self.account.email}"

    @property
    def resource_type(self) -> str:
        if self.account is None:
            return "cloudresourcemanager.googleapis.com/Project"
        return "iam.googleapis.com/ServiceAccount"


class Iam:
    def __init__(self, store: Store, clock: Clock, auditor: Auditor) -> None:
        self._store = store
        self._clock = clock
        self._auditor = auditor
        self._parsed: dict[str, Policy] = {}

    # evaluation --------------------------------------------------------------------------

    def _stored(self, key: str) -> Policy:
        record = self._store.get_policy(key)
        if record is None:
            return _EMPTY
        parsed = self._parsed.get(key)
        if parsed is not None and parsed.etag == record.etag:
            return parsed  # every write changes the etag, so an equal etag is the same policy
        policy = policy_from_stored(orjson.loads(record.policy_json), record.etag)
        if len(self._parsed) >= _PARSED_CACHE_SIZE:
            self._parsed.clear()
        self._parsed[key] = policy
        return policy

    def effective(self, target: Target) -> list[Policy]:
        policies = [self._stored(Target(target.project).policy_key)]
        if target.account is not None:
            policies.append(self._stored(target.policy_key))
        return policies

    def decide(
        self, principal: Principal, permission: str, target: Target, service: str = ""
    ) -> Decision:
        context = ConditionContext(
            request_time=to_datetime(self._clock.now()),
            resource_name=target.name,
            resource_type=target.resource_type,
            resource_service=service or target.resource_type.split("/", 1)[0],
        )
        return decide(self.effective(target), principal, permission, context)

    def check(
        self,
        principal: Principal,
        permission: str,
        target: Target,
        *,
        method: str,
        service: str = "",
    ) -> Decision:
        """Allow or raise PERMISSION_DENIED (audited, with the permission in ErrorInfo)."""
        decision = self.decide(principal, permission, target, service)
        if not decision.allowed:
            self.deny(principal, permission, target.name, method=method, reason="no binding")
        return decision

    def deny(
        self, principal: Principal, permission: str, resource: str, *, method: str, reason: str
    ) -> NoReturn:
        """Audit a denial, then raise PERMISSION_DENIED with Google's text."""
        self._auditor.denied(
            method=method,
            principal=principal.member,
            resource=resource,
            permission=permission,
            reason=reason,
        )
        raise PermissionDenied(denied_message(permission), permission=permission)

    def existing_project(
        self, principal: Principal, project_id: str, permission: str
    ) -> ProjectRecord:
        """The project ``project_id``; a missing one is denied like a lack of ``permission``
        (Google does not reveal which projects exist)."""
        record = self._store.get_project(project_id)
        if record is None:
            self.deny(
                principal,
                permission,
                f"projects/{project_id}",
                method=permission,
                reason="no such project",
            )
        return record

    # getIamPolicy / setIamPolicy / testIamPermissions ------------------------------------

    def _permission(self, target: Target, verb: str) -> str:
        if target.account is None:
            return f"resourcemanager.projects.{verb}"
        return f"iam.serviceAccounts.{verb}"

    def get_policy(
        self, principal: Principal, target: Target, requested_version: int
    ) -> dict[str, Any]:
        if requested_version not in (0, 1, 3):
            raise InvalidArgument(
                f"Invalid requestedPolicyVersion {requested_version}: valid versions are "
                "0, 1 and 3."
            )
        self.check(
            principal, self._permission(target, "getIamPolicy"), target, method="GetIamPolicy"
        )
        stored = self._stored(target.policy_key)
        return policy_to_json(stored, requested_version, orphaned=self._orphaned(stored))

    def _live_id(self, member: str) -> str | None:
        account = self._store.find_service_account(member.partition(":")[2].lower())
        return None if account is None else account.unique_id

    def _orphaned(self, policy: Policy) -> frozenset[str]:
        """``serviceAccount:`` members whose account was deleted since they were bound."""
        return frozenset(
            member for member, uid in policy.member_ids if self._live_id(member) != uid
        )

    def _pin(self, policy: Policy, current: Policy) -> Policy:
        """Pin each ``serviceAccount:`` member to the id of the live account it names now."""
        ids: dict[str, str] = {}
        for member in sorted(policy.service_account_members()):
            uid = self._live_id(member) or current.ids.get(member)
            if uid is not None:
                ids[member] = uid
        return dataclasses.replace(policy, member_ids=tuple(sorted(ids.items())))

    def set_policy(
        self, principal: Principal, target: Target, raw_policy: object, update_mask: object
    ) -> dict[str, Any]:
        self.check(
            principal, self._permission(target, "setIamPolicy"), target, method="SetIamPolicy"
        )
        mask = _parse_mask(update_mask)
        incoming = parse_policy(raw_policy)
        given_etag = (raw_policy.get("etag") if isinstance(raw_policy, dict) else None) or None
        current = self._stored(target.policy_key)
        if given_etag is not None and given_etag != current.etag:
            raise Aborted(CONCURRENT_POLICY_CHANGES)
        merged = Policy(
            version=incoming.version if "bindings" in mask else current.version,
            bindings=incoming.bindings if "bindings" in mask else current.bindings,
            audit_configs=(
                incoming.audit_configs if "auditConfigs" in mask else current.audit_configs
            ),
        )
        if target.account is None:
            _require_an_owner(merged)
        merged = self._pin(merged, current)
        stored = policy_to_json(merged, 3, for_storage=True)
        stored.pop("etag", None)
        revision = self._revision(target.policy_key) + 1
        body = orjson.dumps(stored).decode()
        etag = _etag(target.policy_key, revision, body)
        try:
            self._store.put_policy(
                PolicyRecord(
                    resource=target.policy_key,
                    policy_json=body,
                    etag=etag,
                    revision=revision,
                    updated_at=self._clock.now(),
                ),
                # Always compare-and-set against what we read: an omitted etag means "overwrite
                # what I saw", and two writers racing must not both win.
                expected_etag=current.etag,
            )
        except Conflict:
            raise Aborted(CONCURRENT_POLICY_CHANGES) from None
        self._auditor.record(
            method="SetIamPolicy",
            principal=principal.member,
            resource=target.name,
            permission=self._permission(target, "setIamPolicy"),
            outcome="granted",
            detail={"etag": etag, "bindings": len(merged.bindings)},
        )
        written = self._stored(target.policy_key)
        return policy_to_json(written, 3, orphaned=self._orphaned(written))

    def _revision(self, key: str) -> int:
        record = self._store.get_policy(key)
        return 0 if record is None else record.revision

    def test_permissions(
        self, principal: Principal, target: Target, permissions: object
    ) -> list[str]:
        """The asked permissions ``principal`` holds on ``target`` (no permission needed)."""
        tested = tested_permissions(permissions, account=target.account is not None)
        return [p for p in tested if self.decide(principal, p, target).allowed]


def tested_permissions(permissions: object, *, account: bool) -> list[str]:
    """Validate a testIamPermissions request: a list of concrete permissions of the resource."""
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise InvalidArgument("permissions must be a list of strings.")
    if len(permissions) > 100:
        raise InvalidArgument("No more than 100 permissions can be tested at once.")
    valid = SERVICE_ACCOUNT_PERMISSIONS if account else PROJECT_PERMISSIONS
    for permission in permissions:
        if "*" in permission:
            raise InvalidArgument(
                f"Permissions with wildcards (*) are not allowed: {permission[:200]!r}."
            )
        if permission not in valid:
            raise InvalidArgument(f"Permission {permission[:200]} is not valid for this resource.")
    return list(dict.fromkeys(permissions))


def _parse_mask(update_mask: object) -> set[str]:
    if update_mask in (None, ""):
        return {"bindings", "etag"}
    if not isinstance(update_mask, str):
        raise InvalidArgument("updateMask must be a comma-separated string of field paths.")
    fields = {f.strip() for f in update_mask.split(",") if f.strip()}
    unknown = fields - _MASK_FIELDS
    if unknown:
        raise InvalidArgument(
            f"updateMask contains an unknown field {sorted(unknown)[0]!r}; allowed: "
            "bindings, etag, auditConfigs."
        )
    return fields


def _require_an_owner(policy: Policy) -> None:
    for binding in policy.bindings:
        if (
            binding.role == "roles/owner"
            and binding.condition is None
            and any(m.startswith(("user:", "serviceAccount:")) for m in binding.members)
        ):
            return
    raise FailedPrecondition(
        "A project policy must keep at least one unconditional roles/owner binding for a "
        "user or service account; otherwise nobody could administer the project."
    )


def _etag(key: str, revision: int, body: str) -> str:
    digest = hashlib.sha256(f"{key}\x00{revision}\x00{body}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()
