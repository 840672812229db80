"""Resource names and identifiers of the IAM resource model, and their validation.

Service accounts are named ``projects/{PROJECT}/serviceAccounts/{EMAIL_OR_UNIQUE_ID}``; ``-``
stands for "any project" (https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts).
Account ids follow Google's rule: 6-30 characters, lowercase letters, digits and hyphens,
starting with a letter and not ending with a hyphen.
"""

from __future__ import annotations

import dataclasses
import re

from tokensmith.errors import InvalidArgument

__all__ = [
    "SA_EMAIL_DOMAIN",
    "Principal",
    "ServiceAccountRef",
    "parse_delegate",
    "parse_member_principal",
    "parse_service_account_name",
    "service_account_email",
    "validate_account_id",
    "validate_email",
    "validate_project_id",
]

SA_EMAIL_DOMAIN = "iam.gserviceaccount.com"
MAX_EMAIL_LENGTH = 254

# \Z, not $: "$" also matches before a trailing newline, which would let "id\n" through.
_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\Z")
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\Z")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+\Z")
_UNIQUE_ID = re.compile(r"^[0-9]{1,30}\Z")
_SA_NAME = re.compile(r"^projects/([^/]+)/serviceAccounts/([^/]+)\Z")


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: ``user:EMAIL`` or ``serviceAccount:EMAIL``."""

    kind: str  # "user" | "serviceAccount"
    email: str
    unique_id: str = ""

    @property
    def member(self) -> str:
        return f"{self.kind}:{self.email}"

    @property
    def is_service_account(self) -> bool:
        return self.kind == "serviceAccount"


@dataclasses.dataclass(frozen=True)
class ServiceAccountRef:
    """A reference to a service account as written by a caller: by email or by unique id."""

    project: str  # "-" for any project
    key: str  # an email or a numeric unique id

    @property
    def is_unique_id(self) -> bool:
        return _UNIQUE_ID.match(self.key) is not None


def validate_account_id(account_id: str) -> str:
    if not isinstance(account_id, str) or not _ACCOUNT_ID.match(account_id):
        raise InvalidArgument(
            "accountId must be 6-30 characters long, and match the regular expression "
            "`[a-z]([-a-z0-9]*[a-z0-9])`."
        )
    return account_id


def validate_project_id(project: str) -> str:
    if not _PROJECT_ID.match(project):
        raise InvalidArgument(
            f"Invalid project id {project!r}: a project id is 6-30 characters of lowercase "
            "letters, digits or hyphens, starting with a letter."
        )
    return project


def validate_email(email: str, *, field: str = "email") -> str:
    if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise InvalidArgument(f"Invalid {field}: {str(email)[:100]!r} is not an email address.")
    return email


def service_account_email(account_id: str, project: str) -> str:
    return f"{account_id}@{project}.{SA_EMAIL_DOMAIN}"


def parse_service_account_name(name: str) -> ServiceAccountRef:
    """Parse ``projects/{p}/serviceAccounts/{email|id}``; a bad name is INVALID_ARGUMENT."""
    match = _SA_NAME.match(name)
    if match is None:
        raise InvalidArgument(
            f"Invalid service account name {name[:200]!r}: expected "
            "projects/{PROJECT}/serviceAccounts/{EMAIL_OR_UNIQUE_ID}."
        )
    project, key = match.group(1), match.group(2)
    if not (_UNIQUE_ID.match(key) or (len(key) <= MAX_EMAIL_LENGTH and _EMAIL.match(key))):
        raise InvalidArgument(
            f"Invalid service account name {name[:200]!r}: {key[:100]!r} is neither an email "
            "nor a unique id."
        )
    return ServiceAccountRef(project=project, key=key)


def parse_delegate(value: object) -> ServiceAccountRef:
    """A delegate as clients send it: ``projects/-/serviceAccounts/X`` or a bare email or id."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(
            "delegates: each entry must be a non-empty string of the form "
            "projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}."
        )
    if value.startswith("projects/"):
        return parse_service_account_name(value)
    if _UNIQUE_ID.match(value) or (len(value) <= MAX_EMAIL_LENGTH and _EMAIL.match(value)):
        return ServiceAccountRef(project="-", key=value)
    raise InvalidArgument(
        f"delegates: {value[:200]!r} is not of the form "
        "projects/-/serviceAccounts/{ACCOUNT_EMAIL_OR_UNIQUEID}."
    )


def parse_member_principal(member: str) -> Principal | None:
    """The principal a ``user:``/``serviceAccount:`` member names; None for other member kinds."""
    kind, _, email = member.partition(":")
    if kind in ("user", "serviceAccount") and email:
        return Principal(kind=kind, email=email.lower())
    return None
