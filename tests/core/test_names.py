"""Tests for tokensmith.core.names: account ids, project ids, emails, service account resource
names, delegates and members."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensmith.core.names import (
    SA_EMAIL_DOMAIN,
    Principal,
    ServiceAccountRef,
    parse_delegate,
    parse_member_principal,
    parse_service_account_name,
    service_account_email,
    validate_account_id,
    validate_email,
    validate_project_id,
)
from tokensmith.errors import InvalidArgument

FAST = settings(max_examples=200, deadline=timedelta(seconds=2), database=None)
GOOGLE_ACCOUNT_ID = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])")

VALID_IDS = ["abcdef", "a" * 30, "a-b-c-d", "build3r", "x12345", "a----b"]
INVALID_IDS = [
    "abcde",  # 5 characters
    "a" * 31,
    "1abcde",
    "-abcdef",
    "abcdef-",
    "Abcdef",
    "abc_def",
    "abc.def",
    "abcdéf",
    "abcdef\n",  # "$" would have matched before the newline
    "\nabcdef",
    "",
]


@pytest.mark.parametrize("account_id", VALID_IDS)
def test_valid_account_ids(account_id: str) -> None:
    """Ids of 6-30 characters matching Google's pattern are returned unchanged."""
    assert validate_account_id(account_id) == account_id


@pytest.mark.parametrize("account_id", [*INVALID_IDS, None, 123456, ["abcdef"]])
def test_invalid_account_ids(account_id: object) -> None:
    """Anything else is INVALID_ARGUMENT whose message names accountId and the rule."""
    with pytest.raises(InvalidArgument) as caught:
        validate_account_id(account_id)  # type: ignore[arg-type]
    assert caught.value.message.startswith("accountId must be 6-30 characters long")
    assert "[a-z]([-a-z0-9]*[a-z0-9])" in caught.value.message


@FAST
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_A\n", max_size=34))
def test_account_id_rule_matches_google(candidate: str) -> None:
    """validate_account_id accepts exactly Google's regex with 6-30 characters."""
    expected = 6 <= len(candidate) <= 30 and GOOGLE_ACCOUNT_ID.fullmatch(candidate) is not None
    try:
        validate_account_id(candidate)
    except InvalidArgument:
        assert not expected
    else:
        assert expected


@pytest.mark.parametrize("project", ["tokensmith-local", "my-project-123", "abcdef"])
def test_valid_project_ids(project: str) -> None:
    """Project ids follow the same shape as account ids."""
    assert validate_project_id(project) == project


@pytest.mark.parametrize("project", ["abc", "My-Project", "project_1", "1project", "project-\n"])
def test_invalid_project_ids(project: str) -> None:
    """Malformed project ids are INVALID_ARGUMENT naming the id."""
    with pytest.raises(InvalidArgument, match="Invalid project id"):
        validate_project_id(project)


@pytest.mark.parametrize(
    "email",
    [
        "a@example.com",
        "first.last+tag@sub.example.co",
        "sa@p.iam.gserviceaccount.com",
        "A_B%c@x-y.io",
    ],
)
def test_valid_emails(email: str) -> None:
    """Ordinary addresses are accepted unchanged."""
    assert validate_email(email) == email


@pytest.mark.parametrize(
    "email",
    [
        "plain",
        "a@",
        "@example.com",
        "a@localhost",
        "a@example..com",
        "a b@example.com",
        "a@example.com\n",
        "a@exa_mple.com",
        "a" * 250 + "@example.com",  # longer than 254
        "",
        None,
    ],
)
def test_invalid_emails(email: object) -> None:
    """Malformed addresses are INVALID_ARGUMENT naming the field."""
    with pytest.raises(InvalidArgument, match="Invalid member"):
        validate_email(email, field="member")  # type: ignore[arg-type]


def test_service_account_email() -> None:
    """An account's email is ID@PROJECT.iam.gserviceaccount.com."""
    assert service_account_email("builder", "my-proj") == f"builder@my-proj.{SA_EMAIL_DOMAIN}"
    assert SA_EMAIL_DOMAIN == "iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("name", "ref", "is_unique_id"),
    [
        (
            "projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com",
            ServiceAccountRef("p", "sa@p.iam.gserviceaccount.com"),
            False,
        ),
        (
            "projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com",
            ServiceAccountRef("-", "sa@p.iam.gserviceaccount.com"),
            False,
        ),
        (
            "projects/-/serviceAccounts/123456789012345678901",
            ServiceAccountRef("-", "123456789012345678901"),
            True,
        ),
    ],
)
def test_parse_service_account_name(name: str, ref: ServiceAccountRef, is_unique_id: bool) -> None:
    """Names carry a project (or -) and an email or a numeric unique id."""
    parsed = parse_service_account_name(name)
    assert parsed == ref
    assert parsed.is_unique_id is is_unique_id


@pytest.mark.parametrize(
    "name",
    [
        "projects/p/serviceAccounts/",
        "projects/p/serviceAccounts/not-an-email",
        "projects/p/serviceAccounts/12ab",
        "projects/p/serviceAccounts/a@b.com/keys/k",
        "projects//serviceAccounts/a@b.com",
        "project/p/serviceAccounts/a@b.com",
        "projects/p/serviceAccounts/a@b.com\n",
        "projects/p/serviceAccounts/" + "1" * 31,
        "projects/p/serviceAccounts/" + "a" * 250 + "@example.com",
        "",
    ],
)
def test_parse_service_account_name_rejects(name: str) -> None:
    """Anything else is INVALID_ARGUMENT naming the expected form."""
    with pytest.raises(InvalidArgument, match="Invalid service account name"):
        parse_service_account_name(name)


def test_parse_service_account_name_truncates_long_input() -> None:
    """A huge name is not echoed back whole in the error message."""
    with pytest.raises(InvalidArgument) as caught:
        parse_service_account_name("x" * 100_000)
    assert len(caught.value.message) < 500


@pytest.mark.parametrize(
    ("value", "ref"),
    [
        (
            "projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com",
            ServiceAccountRef("-", "sa@p.iam.gserviceaccount.com"),
        ),
        ("sa@p.iam.gserviceaccount.com", ServiceAccountRef("-", "sa@p.iam.gserviceaccount.com")),
        ("123456789012345678901", ServiceAccountRef("-", "123456789012345678901")),
        ("projects/p/serviceAccounts/123", ServiceAccountRef("p", "123")),
    ],
)
def test_parse_delegate(value: str, ref: ServiceAccountRef) -> None:
    """Delegates arrive as full names, bare emails or bare unique ids (COMPAT §7.5)."""
    assert parse_delegate(value) == ref


@pytest.mark.parametrize(
    "value", ["", None, 5, "not an email", "projects/-/serviceAccounts/x", "sa@p.com\n"]
)
def test_parse_delegate_rejects(value: object) -> None:
    """Malformed delegates are INVALID_ARGUMENT mentioning delegates or the name."""
    with pytest.raises(InvalidArgument):
        parse_delegate(value)


@pytest.mark.parametrize(
    ("member", "principal"),
    [
        ("user:Alice@Example.com", Principal("user", "alice@example.com")),
        (
            "serviceAccount:sa@p.iam.gserviceaccount.com",
            Principal("serviceAccount", "sa@p.iam.gserviceaccount.com"),
        ),
        ("group:g@example.com", None),
        ("domain:example.com", None),
        ("allUsers", None),
        ("user:", None),
    ],
)
def test_parse_member_principal(member: str, principal: Principal | None) -> None:
    """Only user: and serviceAccount: members name a principal (lower-cased)."""
    assert parse_member_principal(member) == principal


def test_principal_member_and_kind() -> None:
    """A principal renders as its member string."""
    robot = Principal("serviceAccount", "sa@p.iam.gserviceaccount.com", "1")
    assert robot.member == "serviceAccount:sa@p.iam.gserviceaccount.com"
    assert robot.is_service_account
    assert not Principal("user", "a@b.co").is_service_account


@FAST
@given(st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True))
def test_every_valid_id_makes_a_parseable_name(account_id: str) -> None:
    """Any valid account id yields an email that parses back as a service account name."""
    email = service_account_email(validate_account_id(account_id), "tokensmith-local")
    ref = parse_service_account_name(f"projects/tokensmith-local/serviceAccounts/{email}")
    assert ref == ServiceAccountRef("tokensmith-local", email)
    assert not ref.is_unique_id
