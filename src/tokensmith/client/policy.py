"""IAM allow-policy edits, and the read-modify-write loop that applies them safely.

https://cloud.google.com/iam/docs/policies#etag: a policy is read with its ``etag``, edited and
written back with that etag; a write that lost a race comes back ``409 ABORTED`` and is redone
from a fresh read. Policies are read at version 3 so conditional bindings survive the round
trip (https://cloud.google.com/iam/docs/policies#versions). The edits are pure functions that
return the new policy, or ``None`` when there is nothing to change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tokensmith.client.errors import ClientError
from tokensmith.client.rest import Client

__all__ = [
    "POLICY_VERSION",
    "get_iam_policy",
    "read_modify_write",
    "update_iam_policy",
    "with_member",
    "without_member",
]

POLICY_VERSION = 3
ATTEMPTS = 5
BACKOFF = 0.1  # seconds before the first retry; doubles on each further one

Json = dict[str, Any]
Edit = Callable[[Json], Json | None]


def _same_member(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _same_condition(a: object, b: Mapping[str, str] | None) -> bool:
    if not a or not b:
        return not a and not b
    assert isinstance(a, Mapping)
    return all(a.get(f, "") == b.get(f, "") for f in ("title", "expression", "description"))


def _finish(policy: Mapping[str, Any], bindings: list[Json]) -> Json:
    out = dict(policy)
    out["bindings"] = bindings
    if any(b.get("condition") for b in bindings):
        out["version"] = POLICY_VERSION
    return out


def with_member(
    policy: Mapping[str, Any],
    member: str,
    role: str,
    condition: Mapping[str, str] | None = None,
) -> Json | None:
    """``policy`` granting ``role`` to ``member`` (under ``condition``); None if it already does."""
    bindings = [dict(b) for b in policy.get("bindings", [])]
    for binding in bindings:
        if binding.get("role") == role and _same_condition(binding.get("condition"), condition):
            members = list(binding.get("members", []))
            if any(_same_member(m, member) for m in members):
                return None
            binding["members"] = [*members, member]
            break
    else:
        added: Json = {"role": role, "members": [member]}
        if condition:
            added["condition"] = dict(condition)
        bindings.append(added)
    return _finish(policy, bindings)


def without_member(policy: Mapping[str, Any], member: str, role: str) -> Json | None:
    """``policy`` with ``member`` out of every binding of ``role``; None if it was in none."""
    kept: list[Json] = []
    removed = False
    for raw in policy.get("bindings", []):
        binding = dict(raw)
        if binding.get("role") == role:
            members = [m for m in binding.get("members", []) if not _same_member(m, member)]
            if len(members) != len(binding.get("members", [])):
                removed = True
                if not members:
                    continue
                binding["members"] = members
        kept.append(binding)
    return _finish(policy, kept) if removed else None


def read_modify_write(
    read: Callable[[], Json],
    write: Callable[[Json], Json],
    edit: Edit,
    *,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Json, bool]:
    """Apply ``edit`` to what ``read`` returns and ``write`` it, redoing it on ``ABORTED``.

    Returns the policy as it now stands and whether this call changed it.
    """
    for attempt in range(attempts):
        current = read()
        updated = edit(current)
        if updated is None:
            return current, False
        try:
            return write(updated), True
        except ClientError as exc:
            if exc.status != "ABORTED" or attempt == attempts - 1:
                raise
        sleep(BACKOFF * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def update_iam_policy(
    client: Client,
    resource: str,
    edit: Edit,
    *,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Json, bool]:
    """Read-modify-write the IAM policy of ``resource`` (an API path such as ``/v1/projects/p``)."""
    return read_modify_write(
        lambda: get_iam_policy(client, resource),
        lambda policy: client.post(f"{resource}:setIamPolicy", {"policy": policy}),
        edit,
        attempts=attempts,
        sleep=sleep,
    )


def get_iam_policy(client: Client, resource: str) -> Json:
    """The IAM policy of ``resource`` at version 3 (conditions included)."""
    return client.post(
        f"{resource}:getIamPolicy", {"options": {"requestedPolicyVersion": POLICY_VERSION}}
    )
