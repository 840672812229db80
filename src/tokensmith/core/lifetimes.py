"""Credential lifetimes: ``google.protobuf.Duration`` strings and the limits Google applies.

An access token from ``generateAccessToken`` lives 1 hour by default and at most 1 hour, or at
most 12 hours for accounts listed by the list constraint
``constraints/iam.allowServiceAccountCredentialLifetimeExtension``
(https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken).
A ``signJwt`` payload's ``exp`` may not be in the past nor more than 12 hours ahead.
"""

from __future__ import annotations

import re

from tokensmith.errors import InvalidArgument

__all__ = [
    "DEFAULT_LIFETIME",
    "EXTENDED_MAX_LIFETIME",
    "MAX_LIFETIME",
    "SIGN_JWT_MAX_AHEAD",
    "access_token_lifetime",
    "parse_duration",
]

DEFAULT_LIFETIME = 3600
MAX_LIFETIME = 3600
EXTENDED_MAX_LIFETIME = 43200
SIGN_JWT_MAX_AHEAD = 43200

_DURATION = re.compile(r"^([0-9]{1,12})(\.[0-9]{1,9})?s$")


def parse_duration(text: object, *, field: str) -> float:
    """Seconds of a Duration in its JSON form (``"600s"``, ``"3.5s"``); anything else is 400."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise InvalidArgument(
            f"{field}: invalid duration {str(text)[:40]!r}; use seconds with an 's' suffix, "
            'e.g. "3600s".'
        )
    return float(text[:-1])


def access_token_lifetime(raw: object, *, extension_allowed: bool) -> int:
    """Whole seconds an access token lives, after checking the limits; ``None`` → default."""
    if raw is None or raw == "":
        return DEFAULT_LIFETIME
    seconds = parse_duration(raw, field="lifetime")
    if seconds < 1:
        raise InvalidArgument("lifetime must be at least 1 second.")
    limit = EXTENDED_MAX_LIFETIME if extension_allowed else MAX_LIFETIME
    if seconds > limit:
        if extension_allowed:
            raise InvalidArgument(
                f"lifetime {raw} exceeds the maximum of {EXTENDED_MAX_LIFETIME}s (12 hours)."
            )
        raise InvalidArgument(
            f"lifetime {raw} exceeds the maximum of {MAX_LIFETIME}s. Longer lifetimes (up to "
            "43200s) require the service account to be listed by the org policy constraint "
            "constraints/iam.allowServiceAccountCredentialLifetimeExtension."
        )
    return int(seconds)
