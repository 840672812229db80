"""IAM allow policies: the value type, its validation, version rules and evaluation.

Follows https://cloud.google.com/iam/docs/reference/rest/v1/Policy and
https://cloud.google.com/iam/docs/policies#versions:

- valid versions are 0, 1 and 3; a policy with a conditional binding must be version 3;
- reading a conditional policy at a version below 3 returns the bindings without their
  conditions and with the role renamed ``<role>_withcond_<hash>`` (so nothing is granted by
  mistake to a tool that ignores conditions);
- bindings with the same role and condition are merged; bindings without members are dropped;
- an effective decision is the union over every policy on the resource's ancestry (a service
  account inherits its project's policy).

Evaluation is a pure function: the caller passes the principal, the permission and a
``ConditionContext`` holding the request time and resource attributes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokensmith.core.conditions import (
    Condition,
    ConditionContext,
    ConditionError,
    compile_condition,
)
from tokensmith.core.names import Principal, validate_email
from tokensmith.core.roles import ROLES, permissions_of
from tokensmith.errors import InvalidArgument

__all__ = [
    "MAX_MEMBERS",
    "Binding",
    "BindingCondition",
    "Decision",
    "Policy",
    "compiled",
    "decide",
    "parse_policy",
    "policy_from_stored",
    "policy_to_json",
]

MAX_MEMBERS = 1500
_VALID_VERSIONS = (0, 1, 3)
_POLICY_FIELDS = {"version", "etag", "bindings", "auditConfigs"}
_BINDING_FIELDS = {"role", "members", "condition"}
_CONDITION_FIELDS = {"title", "description", "expression", "location"}
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")
# GKE Workload Identity's member serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA], to which
# roles/iam.workloadIdentityUser is granted (cloud.google.com/kubernetes-engine/docs/concepts/
# workload-identity); it names a Kubernetes service account, not an email.
_WORKLOAD_IDENTITY = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\.svc\.id\.goog\[[^\[\]/\s]+/[^\[\]/\s]+\]\Z"
)


@dataclasses.dataclass(frozen=True)
class BindingCondition:
    expression: str
    title: str = ""
    description: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"expression": self.expression}
        if self.title:
            out["title"] = self.title
        if self.description:
            out["description"] = self.description
        return out


@dataclasses.dataclass(frozen=True)
class Binding:
    role: str
    members: tuple[str, ...]
    condition: BindingCondition | None = None


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy. ``member_ids`` pins ``serviceAccount:`` members to the unique id the account
    had when the binding was written, so an account deleted and re-created under the same
    email does not inherit the old one's grants (Google binds accounts by id, and shows the
    orphaned member as ``deleted:serviceAccount:EMAIL?uid=ID``)."""

    version: int = 1
    etag: str = ""
    bindings: tuple[Binding, ...] = ()
    audit_configs: tuple[Mapping[str, Any], ...] = ()
    member_ids: tuple[tuple[str, str], ...] = ()

    @property
    def has_conditions(self) -> bool:
        return any(b.condition is not None for b in self.bindings)

    @functools.cached_property
    def ids(self) -> dict[str, str]:
        return dict(self.member_ids)

    def service_account_members(self) -> set[str]:
        return {m for b in self.bindings for m in b.members if m.startswith("serviceAccount:")}


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one permission check, with the binding that granted it (for the log)."""

    allowed: bool
    role: str = ""
    condition: str = ""


def parse_policy(raw: object) -> Policy:
    """Validate a policy as sent to ``setIamPolicy`` and normalise it (merge, drop empty)."""
    if not isinstance(raw, dict):
        raise InvalidArgument("policy must be a JSON object.")
    unknown = set(raw) - _POLICY_FIELDS
    if unknown:
        raise InvalidArgument(
            f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at 'policy': "
            "Cannot find field."
        )
    version = raw.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in _VALID_VERSIONS:
        raise InvalidArgument(f"Invalid policy version {version!r}: valid versions are 0, 1 and 3.")
    etag = raw.get("etag", "")
    if not isinstance(etag, str):
        raise InvalidArgument("policy.etag must be a string.")
    bindings_raw = raw.get("bindings", [])
    if not isinstance(bindings_raw, list):
        raise InvalidArgument("policy.bindings must be a list.")
    bindings = _merge([_parse_binding(b, i) for i, b in enumerate(bindings_raw)])
    total = sum(len(b.members) for b in bindings)
    if total > MAX_MEMBERS:
        raise InvalidArgument(
            f"The number of members in the policy ({total}) is larger than the maximum "
            f"allowed size {MAX_MEMBERS}."
        )
    has_conditions = any(b.condition is not None for b in bindings)
    if has_conditions and version != 3:
        raise InvalidArgument(
            f"Policies with conditional role bindings must set version to 3; got version {version}."
        )
    audit = raw.get("auditConfigs", [])
    if not isinstance(audit, list) or not all(isinstance(a, dict) for a in audit):
        raise InvalidArgument("policy.auditConfigs must be a list of objects.")
    return Policy(
        version=3 if has_conditions else 1,
        etag=etag,
        bindings=tuple(bindings),
        audit_configs=tuple(audit),
    )


def _parse_binding(raw: object, index: int) -> Binding:
    where = f"policy.bindings[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where} must be a JSON object.")
    unknown = set(raw) - _BINDING_FIELDS
    if unknown:
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
            f"'{where}': Cannot find field."
        )
    role = raw.get("role")
    if not isinstance(role, str) or not role:
        raise InvalidArgument(f"{where}.role is required.")
    if role not in ROLES:
        raise InvalidArgument(f"Role ({role}) does not exist in the resource's hierarchy.")
    members = raw.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise InvalidArgument(f"{where}.members must be a list of strings.")
    for member in members:
        _validate_member(member)
    condition = None
    if raw.get("condition") is not None:
        condition = _parse_condition(raw["condition"], where)
    return Binding(role=role, members=tuple(members), condition=condition)


def _parse_condition(raw: object, where: str) -> BindingCondition:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where}.condition must be a JSON object.")
    unknown = set(raw) - _CONDITION_FIELDS
    if unknown:
        raise InvalidArgument(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
            f"'{where}.condition': Cannot find field."
        )
    expression = raw.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidArgument(f"{where}.condition.expression is required.")
    title = raw.get("title", "")
    description = raw.get("description", "")
    if not isinstance(title, str) or not isinstance(description, str):
        raise InvalidArgument(f"{where}.condition title and description must be strings.")
    if len(title) > 100 or len(description) > 256:
        raise InvalidArgument(
            f"{where}.condition: title is limited to 100 and description to 256 characters."
        )
    try:
        compiled(expression)
    except ConditionError as exc:
        raise InvalidArgument(f"Condition expression of {where} is not supported: {exc}") from None
    return BindingCondition(expression=expression, title=title, description=description)


def _validate_member(member: str) -> None:
    if member in ("allUsers", "allAuthenticatedUsers"):
        return
    kind, sep, rest = member.partition(":")
    if kind == "deleted" and sep:
        inner_kind, _, inner = rest.partition(":")
        if inner_kind in ("user", "serviceAccount", "group") and "?uid=" in inner:
            validate_email(inner.split("?uid=", 1)[0], field="member")
            return
    elif kind == "serviceAccount" and _WORKLOAD_IDENTITY.match(rest):
        return
    elif kind in ("user", "serviceAccount", "group") and sep:
        validate_email(rest, field="member")
        return
    elif (kind == "domain" and sep and _DOMAIN.match(rest)) or (
        kind in ("principal", "principalSet") and rest.startswith("//")
    ):
        return
    raise InvalidArgument(f"Invalid member {member[:200]!r}: unsupported member type.")


def _merge(bindings: Iterable[Binding]) -> list[Binding]:
    """Merge bindings sharing role and condition; keep first-seen order; drop empty ones."""
    merged: dict[tuple[str, BindingCondition | None], list[str]] = {}
    for binding in bindings:
        members = merged.setdefault((binding.role, binding.condition), [])
        for member in binding.members:
            if member not in members:
                members.append(member)
    return [
        Binding(role=role, members=tuple(members), condition=condition)
        for (role, condition), members in merged.items()
        if members
    ]


def policy_to_json(
    policy: Policy,
    requested_version: int = 1,
    *,
    orphaned: frozenset[str] = frozenset(),
    for_storage: bool = False,
) -> dict[str, Any]:
    """Render a stored policy at the version the caller asked for, as Google does.

    Members in ``orphaned`` (accounts deleted since the binding was written) render as
    ``deleted:serviceAccount:EMAIL?uid=ID``; ``for_storage`` keeps the member ids.
    """
    downgrade = policy.has_conditions and requested_version < 3
    version = 3 if policy.has_conditions and not downgrade else 1
    out: dict[str, Any] = {"version": version, "etag": policy.etag}
    bindings = []
    ids = policy.ids
    for binding in policy.bindings:
        members = [
            f"deleted:{m}?uid={ids[m]}" if m in orphaned and m in ids else m
            for m in binding.members
        ]
        item: dict[str, Any] = {"role": binding.role, "members": members}
        if binding.condition is not None:
            if downgrade:
                item["role"] = f"{binding.role}_withcond_{_condition_hash(binding.condition)}"
            else:
                item["condition"] = binding.condition.to_json()
        bindings.append(item)
    if bindings:
        out["bindings"] = bindings
    if policy.audit_configs:
        out["auditConfigs"] = [dict(a) for a in policy.audit_configs]
    if for_storage and policy.member_ids:
        out["memberIds"] = dict(policy.member_ids)
    return out


def _condition_hash(condition: BindingCondition) -> str:
    text = "\x00".join((condition.title, condition.description, condition.expression))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@functools.lru_cache(maxsize=4096)
def compiled(expression: str) -> Condition:
    """The compiled form of a condition expression, cached (expressions repeat across calls)."""
    return compile_condition(expression)


def _member_matches(member: str, principal: Principal, ids: Mapping[str, str]) -> bool:
    if member in ("allUsers", "allAuthenticatedUsers"):
        return True
    kind, _, rest = member.partition(":")
    if kind == principal.kind:
        if rest.lower() != principal.email.lower():
            return False
        pinned = ids.get(member)
        return pinned is None or not principal.unique_id or pinned == principal.unique_id
    if kind == "domain" and principal.kind == "user":
        return principal.email.lower().rpartition("@")[2] == rest.lower()
    return False


def decide(
    policies: Sequence[Policy],
    principal: Principal,
    permission: str,
    context: ConditionContext,
) -> Decision:
    """Whether any binding in ``policies`` grants ``permission`` to ``principal`` now."""
    for policy in policies:
        for binding in policy.bindings:
            if permission not in permissions_of(binding.role):
                continue
            if not any(_member_matches(m, principal, policy.ids) for m in binding.members):
                continue
            if binding.condition is None:
                return Decision(allowed=True, role=binding.role)
            if compiled(binding.condition.expression).evaluate(context):
                return Decision(
                    allowed=True, role=binding.role, condition=binding.condition.expression
                )
    return Decision(allowed=False)


def policy_from_stored(raw: Mapping[str, Any], etag: str) -> Policy:
    """Rebuild a policy written by ``policy_to_json(…, 3)``; trusts the store (no validation)."""
    bindings = []
    for item in raw.get("bindings", []):
        condition = None
        if item.get("condition"):
            c = item["condition"]
            condition = BindingCondition(
                expression=c["expression"],
                title=c.get("title", ""),
                description=c.get("description", ""),
            )
        bindings.append(
            Binding(role=item["role"], members=tuple(item["members"]), condition=condition)
        )
    return Policy(
        version=int(raw.get("version", 1)),
        etag=etag,
        bindings=tuple(bindings),
        audit_configs=tuple(raw.get("auditConfigs", [])),
        member_ids=tuple(sorted(raw.get("memberIds", {}).items())),
    )
