"""Lenient query parsing: unencoded audiences (Node, gcloud), flags and scopes."""

from __future__ import annotations

import pytest

from tokensmith.metadata.query import QueryError, flag, identity_query, scopes_param


@pytest.mark.parametrize(
    ("raw", "audience", "others"),
    [
        # Python google-auth: everything URL-encoded, audience first.
        (
            "audience=https%3A%2F%2Fsvc.example%2Fp%3Fa%3Db%26c%3Dd&format=full",
            "https://svc.example/p?a=b&c=d",
            {"format": "full"},
        ),
        # gcloud: the audience raw, then format and licenses.
        (
            "audience=https://svc.example/x?y=1&format=standard&licenses=FALSE",
            "https://svc.example/x?y=1",
            {"format": "standard", "licenses": "FALSE"},
        ),
        # Node: format first, the audience raw to the end (its & included).
        (
            "format=full&audience=https://x.example.com/p?a=b&c=d%20e",
            "https://x.example.com/p?a=b&c=d e",
            {"format": "full"},
        ),
        (
            "audience=32555940559.apps.googleusercontent.com",
            "32555940559.apps.googleusercontent.com",
            {},
        ),
        ("audience=a+b", "a+b", {}),
        ("audience=&format=full", "", {"format": "full"}),
        ("format=full", None, {"format": "full"}),
        ("", None, {}),
        # "audience=" inside another parameter's value is not the audience parameter.
        ("xaudience=1&audience=real", "real", {"xaudience": "1"}),
    ],
)
def test_identity_query_reads_audiences_as_clients_send_them(
    raw: str, audience: str | None, others: dict[str, str]
) -> None:
    """identity_query takes the audience up to &format=/&licenses=, whatever it contains."""
    assert identity_query(raw) == (audience, others)


def test_ampersand_format_inside_an_audience_is_cut_there() -> None:
    """The documented ambiguity: an audience containing "&format=" ends at it."""
    audience, others = identity_query("audience=https://a.example/?x=1&format=y&format=full")
    assert audience == "https://a.example/?x=1"
    assert others == {"format": "y"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("", False),
    ],
)
def test_flags_accept_true_and_false_in_any_case(value: str, expected: bool) -> None:
    """Booleans are true/false in any case (gcloud sends licenses=FALSE), or 1/0."""
    assert flag({"licenses": value}, "licenses") is expected


def test_absent_flag_is_false_and_a_bad_one_is_an_error() -> None:
    """A missing flag is false; "yes" is refused with the parameter's name."""
    assert flag({}, "recursive") is False
    with pytest.raises(QueryError, match="recursive"):
        flag({"recursive": "yes"}, "recursive")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a,b", ("a", "b")),
        ("a, b,,a", ("a", "b")),
        ("a b", ("a", "b")),
        ("", ()),
    ],
)
def test_scopes_param_splits_commas_and_spaces(raw: str, expected: tuple[str, ...]) -> None:
    """scopes=a,b is a comma (or space) separated list without repeats."""
    assert scopes_param({"scopes": raw}) == expected
