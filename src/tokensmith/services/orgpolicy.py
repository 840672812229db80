"""Organization policy (Resource Manager v1 ``OrgPolicy``) on projects, for the one constraint
tokensmith enforces: ``constraints/iam.allowServiceAccountCredentialLifetimeExtension``, the
list of service accounts whose access tokens may live up to 12 hours.

https://cloud.google.com/resource-manager/reference/rest/v1/Policy and
https://cloud.google.com/iam/docs/create-short-lived-credentials-direct#sa-credentials-oauth
A project here has no parent, so the effective policy is the project's own (or the default:
no account listed).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from tokensmith.clock import Clock, to_datetime
from tokensmith.core.names import Principal, validate_email
from tokensmith.errors import Aborted, InvalidArgument
from tokensmith.services.audit import Auditor
from tokensmith.services.iam import Iam, Target
from tokensmith.store.base import Conflict, OrgPolicyRecord, ProjectRecord, Store

__all__ = ["LIFETIME_EXTENSION", "OrgPolicies"]

LIFETIME_EXTENSION = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"
_SUPPORTED = {LIFETIME_EXTENSION}
_POLICY_FIELDS = {
    "constraint",
    "etag",
    "version",
    "listPolicy",
    "booleanPolicy",
    "restoreDefault",
    "updateTime",
}
_LIST_FIELDS = {"allowedValues", "deniedValues", "allValues", "suggestedValue", "inheritFromParent"}
_ALL_VALUES = {"ALL_VALUES_UNSPECIFIED", "ALLOW", "DENY"}


def _constraint(raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidArgument('constraint is required, e.g. "' + LIFETIME_EXTENSION + '".')
    name = raw if raw.startswith("constraints/") else f"constraints/{raw}"
    if name not in _SUPPORTED:
        raise InvalidArgument(
            f"Constraint {name} is not supported by tokensmith; supported: "
            + ", ".join(sorted(_SUPPORTED))
            + "."
        )
    return name


def _string_list(raw: object, field: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise InvalidArgument(f"listPolicy.{field} must be a list of strings.")
    return [validate_email(v, field=f"listPolicy.{field} value") for v in raw]


def _validate(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidArgument("policy is required and must be a JSON object.")
    unknown = set(raw) - _POLICY_FIELDS
    if unknown:
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
            "'policy': Cannot find field."
        )
    constraint = _constraint(raw.get("constraint"))
    if raw.get("booleanPolicy") is not None:
        raise InvalidArgument(f"{constraint} is a list constraint; booleanPolicy does not apply.")
    out: dict[str, Any] = {"constraint": constraint, "version": 1}
    if raw.get("restoreDefault") is not None:
        if raw.get("listPolicy") is not None:
            raise InvalidArgument("Set either listPolicy or restoreDefault, not both.")
        out["restoreDefault"] = {}
        return out
    listed = raw.get("listPolicy") or {}
    if not isinstance(listed, dict):
        raise InvalidArgument("listPolicy must be a JSON object.")
    unknown = set(listed) - _LIST_FIELDS
    if unknown:
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
            "'policy.list_policy': Cannot find field."
        )
    policy: dict[str, Any] = {}
    allowed = _string_list(listed.get("allowedValues"), "allowedValues")
    denied = _string_list(listed.get("deniedValues"), "deniedValues")
    all_values = listed.get("allValues", "ALL_VALUES_UNSPECIFIED")
    if all_values not in _ALL_VALUES:
        raise InvalidArgument(f"listPolicy.allValues must be one of {sorted(_ALL_VALUES)}.")
    if all_values != "ALL_VALUES_UNSPECIFIED" and (allowed or denied):
        raise InvalidArgument("listPolicy.allValues cannot be combined with explicit values.")
    if allowed:
        policy["allowedValues"] = allowed
    if denied:
        policy["deniedValues"] = denied
    if all_values != "ALL_VALUES_UNSPECIFIED":
        policy["allValues"] = all_values
    if listed.get("inheritFromParent"):
        policy["inheritFromParent"] = True
    out["listPolicy"] = policy
    return out


class OrgPolicies:
    def __init__(self, store: Store, clock: Clock, iam: Iam, auditor: Auditor) -> None:
        self._store = store
        self._clock = clock
        self._iam = iam
        self._auditor = auditor

    def _target(self, principal: Principal, project_id: str, permission: str) -> ProjectRecord:
        project = self._iam.existing_project(principal, project_id, permission)
        self._iam.check(principal, permission, Target(project), method=permission)
        return project

    def _render(self, record: OrgPolicyRecord) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(record.policy_json)
        out["etag"] = record.etag
        out["updateTime"] = to_datetime(record.updated_at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return out

    def get(self, principal: Principal, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        project = self._target(principal, project_id, "orgpolicy.policy.get")
        constraint = _constraint(body.get("constraint"))
        record = self._store.get_org_policy(project.project_id, constraint)
        return {"constraint": constraint} if record is None else self._render(record)

    def get_effective(
        self, principal: Principal, project_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        effective = self.get(principal, project_id, body)
        effective.pop("etag", None)
        effective.pop("updateTime", None)
        return effective

    def set(self, principal: Principal, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        project = self._target(principal, project_id, "orgpolicy.policy.set")
        raw = body.get("policy")
        policy = _validate(raw)
        expected = raw.get("etag") if isinstance(raw, dict) else None
        now = self._clock.now()
        text = orjson.dumps(policy, option=orjson.OPT_SORT_KEYS).decode()
        # Chained on the previous etag, so every write moves it (even of the same content at
        # the same instant) and a reader's etag goes stale as soon as anyone writes.
        previous = self._store.get_org_policy(project.project_id, policy["constraint"])
        seed = f"{text}\x00{now}\x00{previous.etag if previous else ''}"
        etag = base64.b64encode(hashlib.sha256(seed.encode()).digest()[:8]).decode()
        record = OrgPolicyRecord(project.project_id, policy["constraint"], text, etag, now)
        try:
            self._store.put_org_policy(record, expected or None)
        except Conflict:
            raise Aborted(
                "The policy was modified concurrently (etag mismatch); read it again and retry."
            ) from None
        self._auditor.record(
            method="SetOrgPolicy",
            principal=principal.member,
            resource=f"projects/{project.project_id}",
            permission="orgpolicy.policy.set",
            outcome="granted",
            detail={"constraint": policy["constraint"]},
        )
        return self._render(record)

    def clear(self, principal: Principal, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        project = self._target(principal, project_id, "orgpolicy.policy.set")
        constraint = _constraint(body.get("constraint"))
        etag = body.get("etag")
        try:
            self._store.delete_org_policy(
                project.project_id, constraint, etag if isinstance(etag, str) and etag else None
            )
        except Conflict:
            raise Aborted(
                "The policy was modified concurrently (etag mismatch); read it again and retry."
            ) from None
        self._auditor.record(
            method="ClearOrgPolicy",
            principal=principal.member,
            resource=f"projects/{project.project_id}",
            permission="orgpolicy.policy.set",
            outcome="granted",
            detail={"constraint": constraint},
        )
        return {}

    def lifetime_extension_allowed(self, project_id: str, email: str) -> bool:
        """Whether ``email`` may get access tokens of up to 12 hours (list constraint)."""
        record = self._store.get_org_policy(project_id, LIFETIME_EXTENSION)
        if record is None:
            return False
        listed = orjson.loads(record.policy_json).get("listPolicy", {})
        email = email.lower()
        if email in (v.lower() for v in listed.get("deniedValues", [])):
            return False
        if listed.get("allValues") == "ALLOW":
            return True
        return email in (v.lower() for v in listed.get("allowedValues", []))
