"""The one org-policy constraint tokensmith enforces, as a client edits it.

``constraints/iam.allowServiceAccountCredentialLifetimeExtension`` is a list constraint
(https://cloud.google.com/resource-manager/reference/rest/v1/Policy#listpolicy): the service
accounts in ``listPolicy.allowedValues`` may get access tokens that live up to 12 hours
(https://cloud.google.com/iam/docs/create-short-lived-credentials-direct#sa-credentials-oauth).
Edits are pure and merge with what is set; writes go through the etag read-modify-write loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tokensmith.client.policy import ATTEMPTS, read_modify_write
from tokensmith.client.rest import Client

__all__ = [
    "LIFETIME_EXTENSION",
    "allow_lifetime_extension",
    "allowing",
    "clear_org_policy",
    "get_org_policy",
]

LIFETIME_EXTENSION = "constraints/iam.allowServiceAccountCredentialLifetimeExtension"

Json = dict[str, Any]


def allowing(policy: Mapping[str, Any], emails: Sequence[str]) -> Json | None:
    """``policy`` with ``emails`` allowed (and no longer denied); None if they already are."""
    listed = dict(policy.get("listPolicy") or {})
    if listed.get("allValues") == "ALLOW":
        return None
    allowed = list(listed.get("allowedValues", []))
    denied = list(listed.get("deniedValues", []))
    wanted = {e.lower() for e in emails}
    known = {v.lower() for v in allowed}
    added = [e for e in dict.fromkeys(emails) if e.lower() not in known]
    still_denied = [v for v in denied if v.lower() not in wanted]
    if not added and len(still_denied) == len(denied) and "restoreDefault" not in policy:
        return None
    # allValues DENY (nothing allowed) cannot be combined with explicit values; listing
    # accounts replaces it, which is what "allow these accounts" means.
    listed.pop("allValues", None)
    listed["allowedValues"] = [*allowed, *added]
    if still_denied:
        listed["deniedValues"] = still_denied
    else:
        listed.pop("deniedValues", None)
    out: Json = {"constraint": LIFETIME_EXTENSION, "listPolicy": listed}
    if policy.get("etag"):
        out["etag"] = policy["etag"]
    return out


def get_org_policy(client: Client, project: str, constraint: str = LIFETIME_EXTENSION) -> Json:
    return client.post(f"/v1/projects/{project}:getOrgPolicy", {"constraint": constraint})


def allow_lifetime_extension(
    client: Client,
    project: str,
    emails: Sequence[str],
    *,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Json, bool]:
    """Let ``emails`` get 12-hour access tokens in ``project``; returns (policy, changed)."""
    return read_modify_write(
        lambda: get_org_policy(client, project),
        lambda policy: client.post(f"/v1/projects/{project}:setOrgPolicy", {"policy": policy}),
        lambda current: allowing(current, emails),
        attempts=attempts,
        sleep=sleep,
    )


def clear_org_policy(client: Client, project: str, constraint: str = LIFETIME_EXTENSION) -> Json:
    return client.post(f"/v1/projects/{project}:clearOrgPolicy", {"constraint": constraint})
