"""Tests for tokensmith.core.roles: the predefined roles and what they grant."""

from __future__ import annotations

import pytest

from tokensmith.core.roles import (
    PROJECT_PERMISSIONS,
    ROLES,
    SERVICE_ACCOUNT_PERMISSIONS,
    permissions_of,
)

MINT = {
    "iam.serviceAccounts.getAccessToken",
    "iam.serviceAccounts.getOpenIdToken",
    "iam.serviceAccounts.signBlob",
    "iam.serviceAccounts.signJwt",
}
DELEGATE = "iam.serviceAccounts.implicitDelegation"
BASIC = ["roles/owner", "roles/editor", "roles/viewer"]


def test_catalogue_has_the_designed_roles() -> None:
    """Every role DESIGN.md promises is in the catalogue."""
    assert {
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountUser",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.serviceAccountOpenIdTokenCreator",
        "roles/iam.workloadIdentityUser",
    } <= set(ROLES)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_roles_grant_only_known_permissions(role: str) -> None:
    """No role grants a permission that no resource checks (typos would silently do nothing)."""
    assert permissions_of(role)
    assert permissions_of(role) <= PROJECT_PERMISSIONS


@pytest.mark.parametrize("role", BASIC)
def test_basic_roles_cannot_mint(role: str) -> None:
    """Owner, editor and viewer do not include getAccessToken or any other minting permission."""
    assert permissions_of(role).isdisjoint(MINT | {DELEGATE})


def test_token_creator_mints_and_delegates() -> None:
    """TokenCreator holds the four mint permissions plus implicitDelegation."""
    assert MINT | {DELEGATE} <= permissions_of("roles/iam.serviceAccountTokenCreator")


def test_openid_token_creator_only_gets_id_tokens() -> None:
    """OpenIdTokenCreator grants getOpenIdToken and nothing else."""
    assert permissions_of("roles/iam.serviceAccountOpenIdTokenCreator") == {
        "iam.serviceAccounts.getOpenIdToken"
    }


def test_workload_identity_user_mints_tokens_but_does_not_sign() -> None:
    """workloadIdentityUser gets access and ID tokens but cannot sign blobs or JWTs."""
    granted = permissions_of("roles/iam.workloadIdentityUser")
    assert {"iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.getOpenIdToken"} <= granted
    assert granted.isdisjoint({"iam.serviceAccounts.signBlob", "iam.serviceAccounts.signJwt"})


def test_service_account_user_acts_as_but_cannot_mint() -> None:
    """serviceAccountUser grants actAs, not token minting."""
    granted = permissions_of("roles/iam.serviceAccountUser")
    assert "iam.serviceAccounts.actAs" in granted
    assert granted.isdisjoint(MINT)


def test_admin_manages_accounts_but_cannot_mint() -> None:
    """serviceAccountAdmin administers accounts and their policies, but mints nothing."""
    granted = permissions_of("roles/iam.serviceAccountAdmin")
    assert {"iam.serviceAccounts.create", "iam.serviceAccounts.setIamPolicy"} <= granted
    assert granted.isdisjoint(MINT)


def test_viewer_and_editor_cannot_change_policies() -> None:
    """Neither viewer nor editor can change IAM policies; owner can."""
    for role in ("roles/viewer", "roles/editor"):
        assert "resourcemanager.projects.setIamPolicy" not in permissions_of(role)
        assert "iam.serviceAccounts.setIamPolicy" not in permissions_of(role)
    assert "resourcemanager.projects.setIamPolicy" in permissions_of("roles/owner")


def test_viewer_is_read_only() -> None:
    """Every viewer permission is a read (get, list or getIamPolicy)."""
    verbs = {p.rsplit(".", 1)[1] for p in permissions_of("roles/viewer")}
    assert verbs <= {"get", "list", "getIamPolicy"}


def test_unknown_role_grants_nothing() -> None:
    """A role outside the catalogue grants no permission."""
    assert permissions_of("roles/superuser") == frozenset()
    assert permissions_of("roles/viewer_withcond_0123") == frozenset()


def test_service_account_permissions_are_project_permissions() -> None:
    """Permissions on an account can be granted on its project (inheritance), not vice versa."""
    assert SERVICE_ACCOUNT_PERMISSIONS < PROJECT_PERMISSIONS
    assert "iam.serviceAccounts.create" not in SERVICE_ACCOUNT_PERMISSIONS
    assert "resourcemanager.projects.get" not in SERVICE_ACCOUNT_PERMISSIONS
