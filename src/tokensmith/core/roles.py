"""The roles catalogue: predefined roles mapped to the permissions they grant.

Role contents follow Google's predefined roles for the permissions tokensmith enforces
(https://cloud.google.com/iam/docs/understanding-roles). As on Google, the basic roles
(owner, editor, viewer) do NOT include the token-minting permissions: even a project owner must
hold ``roles/iam.serviceAccountTokenCreator`` (or OpenIdTokenCreator) to impersonate.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "PROJECT_PERMISSIONS",
    "ROLES",
    "SERVICE_ACCOUNT_PERMISSIONS",
    "permissions_of",
]

# Permissions that apply to a service account resource.
SERVICE_ACCOUNT_PERMISSIONS: frozenset[str] = frozenset(
    {
        "iam.serviceAccounts.actAs",
        "iam.serviceAccounts.delete",
        "iam.serviceAccounts.disable",
        "iam.serviceAccounts.enable",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.getIamPolicy",
        "iam.serviceAccounts.getOpenIdToken",
        "iam.serviceAccounts.implicitDelegation",
        "iam.serviceAccounts.setIamPolicy",
        "iam.serviceAccounts.signBlob",
        "iam.serviceAccounts.signJwt",
        "iam.serviceAccounts.undelete",
        "iam.serviceAccounts.update",
        "iam.serviceAccountKeys.create",
        "iam.serviceAccountKeys.delete",
        "iam.serviceAccountKeys.disable",
        "iam.serviceAccountKeys.enable",
        "iam.serviceAccountKeys.get",
        "iam.serviceAccountKeys.list",
    }
)

# Permissions that apply to a project (a project also grants everything on its accounts).
PROJECT_PERMISSIONS: frozenset[str] = SERVICE_ACCOUNT_PERMISSIONS | frozenset(
    {
        "iam.serviceAccounts.create",
        "iam.serviceAccounts.list",
        "resourcemanager.projects.get",
        "resourcemanager.projects.getIamPolicy",
        "resourcemanager.projects.setIamPolicy",
        "orgpolicy.policy.get",
        "orgpolicy.policy.set",
        "logging.privateLogEntries.list",
    }
)

_MINT = frozenset(
    {
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.getOpenIdToken",
        "iam.serviceAccounts.implicitDelegation",
        "iam.serviceAccounts.signBlob",
        "iam.serviceAccounts.signJwt",
    }
)
_SET_POLICY = frozenset(
    {
        "iam.serviceAccounts.setIamPolicy",
        "resourcemanager.projects.setIamPolicy",
        "orgpolicy.policy.set",
    }
)
_READ = frozenset(
    {
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
        "iam.serviceAccountKeys.get",
        "iam.serviceAccountKeys.list",
        "iam.serviceAccounts.getIamPolicy",
        "resourcemanager.projects.get",
        "resourcemanager.projects.getIamPolicy",
        "orgpolicy.policy.get",
    }
)

ROLES: Mapping[str, frozenset[str]] = {
    "roles/owner": PROJECT_PERMISSIONS - _MINT,
    "roles/editor": PROJECT_PERMISSIONS - _MINT - _SET_POLICY - {"logging.privateLogEntries.list"},
    "roles/viewer": _READ,
    "roles/browser": frozenset({"resourcemanager.projects.get"}),
    "roles/iam.securityAdmin": frozenset(
        {
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "iam.serviceAccounts.getIamPolicy",
            "iam.serviceAccounts.setIamPolicy",
            "iam.serviceAccountKeys.get",
            "iam.serviceAccountKeys.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.getIamPolicy",
            "resourcemanager.projects.setIamPolicy",
            "orgpolicy.policy.get",
            "logging.privateLogEntries.list",
        }
    ),
    "roles/iam.securityReviewer": frozenset(
        {
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "iam.serviceAccounts.getIamPolicy",
            "iam.serviceAccountKeys.get",
            "iam.serviceAccountKeys.list",
            "resourcemanager.projects.get",
            "resourcemanager.projects.getIamPolicy",
            "orgpolicy.policy.get",
        }
    ),
    "roles/resourcemanager.projectIamAdmin": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.getIamPolicy",
            "resourcemanager.projects.setIamPolicy",
        }
    ),
    "roles/orgpolicy.policyAdmin": frozenset({"orgpolicy.policy.get", "orgpolicy.policy.set"}),
    "roles/iam.serviceAccountAdmin": frozenset(
        {
            "iam.serviceAccounts.create",
            "iam.serviceAccounts.delete",
            "iam.serviceAccounts.disable",
            "iam.serviceAccounts.enable",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getIamPolicy",
            "iam.serviceAccounts.list",
            "iam.serviceAccounts.setIamPolicy",
            "iam.serviceAccounts.undelete",
            "iam.serviceAccounts.update",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountCreator": frozenset(
        {"iam.serviceAccounts.create", "resourcemanager.projects.get"}
    ),
    "roles/iam.serviceAccountDeleter": frozenset(
        {"iam.serviceAccounts.delete", "resourcemanager.projects.get"}
    ),
    "roles/iam.serviceAccountViewer": frozenset(
        {
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "iam.serviceAccountKeys.get",
            "iam.serviceAccountKeys.list",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountUser": frozenset(
        {
            "iam.serviceAccounts.actAs",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountKeyAdmin": frozenset(
        {
            "iam.serviceAccountKeys.create",
            "iam.serviceAccountKeys.delete",
            "iam.serviceAccountKeys.disable",
            "iam.serviceAccountKeys.enable",
            "iam.serviceAccountKeys.get",
            "iam.serviceAccountKeys.list",
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.list",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountTokenCreator": frozenset(
        {
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getAccessToken",
            "iam.serviceAccounts.getOpenIdToken",
            "iam.serviceAccounts.implicitDelegation",
            "iam.serviceAccounts.list",
            "iam.serviceAccounts.signBlob",
            "iam.serviceAccounts.signJwt",
            "resourcemanager.projects.get",
        }
    ),
    "roles/iam.serviceAccountOpenIdTokenCreator": frozenset({"iam.serviceAccounts.getOpenIdToken"}),
    "roles/iam.workloadIdentityUser": frozenset(
        {
            "iam.serviceAccounts.get",
            "iam.serviceAccounts.getAccessToken",
            "iam.serviceAccounts.getOpenIdToken",
            "iam.serviceAccounts.list",
        }
    ),
}


def permissions_of(role: str) -> frozenset[str]:
    """The permissions a role grants; an unknown role grants nothing."""
    return ROLES.get(role, frozenset())
