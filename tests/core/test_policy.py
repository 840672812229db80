"""Tests for tokensmith.core.policy: parsing and validation of allow policies, rendering at a
requested version, and evaluation — as tables, and as Hypothesis properties of the invariants
every IAM implementation must keep."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensmith.core.conditions import ConditionContext
from tokensmith.core.names import Principal
from tokensmith.core.policy import (
    MAX_MEMBERS,
    Binding,
    BindingCondition,
    Decision,
    Policy,
    decide,
    parse_policy,
    policy_from_stored,
    policy_to_json,
)
from tokensmith.core.roles import ROLES, permissions_of
from tokensmith.errors import InvalidArgument

NOW = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)
SA_NAME = "projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com"
CTX = ConditionContext(
    request_time=NOW,
    resource_name=SA_NAME,
    resource_type="iam.googleapis.com/ServiceAccount",
    resource_service="iam.googleapis.com",
)
ALICE = Principal("user", "alice@example.com")
ROBOT = Principal("serviceAccount", "robot@p.iam.gserviceaccount.com", "100000000000000000001")
GET = "iam.serviceAccounts.get"
MINT = "iam.serviceAccounts.getAccessToken"
BEFORE = 'request.time < timestamp("2028-01-01T00:00:00Z")'  # true at NOW
AFTER = 'request.time > timestamp("2028-01-01T00:00:00Z")'  # false at NOW

FAST = settings(max_examples=80, deadline=timedelta(seconds=2), database=None)


def policy(*bindings: dict[str, Any], version: int = 1) -> Policy:
    return parse_policy({"version": version, "bindings": list(bindings)})


def allowed(policies: list[Policy] | Policy, principal: Principal, permission: str) -> bool:
    chain = policies if isinstance(policies, list) else [policies]
    return decide(chain, principal, permission, CTX).allowed


# parse_policy ---------------------------------------------------------------------------------


def test_parse_policy_normalises() -> None:
    """Parsing merges bindings of the same role and condition and drops empty ones."""
    parsed = parse_policy(
        {
            "version": 1,
            "etag": "BwWWja0YfJA=",
            "bindings": [
                {"role": "roles/viewer", "members": ["user:a@x.io"]},
                {"role": "roles/editor", "members": []},
                {"role": "roles/viewer", "members": ["user:b@x.io", "user:a@x.io"]},
            ],
        }
    )
    assert parsed == Policy(
        version=1,
        etag="BwWWja0YfJA=",
        bindings=(Binding("roles/viewer", ("user:a@x.io", "user:b@x.io")),),
    )


def test_parse_policy_keeps_conditions_apart() -> None:
    """The same role with and without a condition stays two bindings."""
    parsed = policy(
        {"role": "roles/viewer", "members": ["user:a@x.io"]},
        {"role": "roles/viewer", "members": ["user:b@x.io"], "condition": {"expression": BEFORE}},
        version=3,
    )
    assert [b.condition for b in parsed.bindings] == [None, BindingCondition(BEFORE)]
    assert parsed.version == 3


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        ({}, 1),
        ({"version": 0}, 1),
        ({"version": 3}, 1),  # no conditions: stored as version 1
        ({"version": 3, "bindings": [{"role": "roles/viewer", "members": ["user:a@x.io"]}]}, 1),
        (
            {
                "version": 3,
                "bindings": [
                    {
                        "role": "roles/viewer",
                        "members": ["user:a@x.io"],
                        "condition": {"expression": "true"},
                    }
                ],
            },
            3,
        ),
    ],
)
def test_parse_policy_version(raw: dict[str, Any], version: int) -> None:
    """The parsed version is 3 exactly when a binding carries a condition."""
    assert parse_policy(raw).version == version


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "policy must be a JSON object"),
        ([], "policy must be a JSON object"),
        ({"version": 2}, "Invalid policy version 2"),
        ({"version": True}, "Invalid policy version True"),
        ({"version": "1"}, "Invalid policy version '1'"),
        ({"etag": 1}, "policy.etag must be a string"),
        ({"bindings": {}}, "policy.bindings must be a list"),
        ({"bindings": ["roles/viewer"]}, "policy.bindings[0] must be a JSON object"),
        ({"bindings": [{"members": []}]}, "policy.bindings[0].role is required"),
        ({"bindings": [{"role": "", "members": []}]}, "policy.bindings[0].role is required"),
        (
            {"bindings": [{"role": "roles/superuser", "members": []}]},
            "Role (roles/superuser) does not exist in the resource's hierarchy.",
        ),
        (
            {"bindings": [{"role": "roles/viewer", "members": [1]}]},
            "policy.bindings[0].members must be a list of strings",
        ),
        ({"bindings": [{"role": "roles/viewer", "members": ["bob"]}]}, "Invalid member 'bob'"),
        (
            {"bindings": [{"role": "roles/viewer", "members": ["user:bob"]}]},
            "Invalid member: 'bob' is not an email address",
        ),
        ({"bindings": [{"role": "roles/viewer", "why": 1}]}, 'Unknown name "why"'),
        ({"rules": []}, "Unknown name \"rules\" at 'policy'"),
        (
            {
                "bindings": [
                    {
                        "role": "roles/viewer",
                        "members": ["user:a@x.io"],
                        "condition": {"expression": "true"},
                    }
                ]
            },
            "must set version to 3",
        ),
        (
            {
                "version": 3,
                "bindings": [
                    {"role": "roles/viewer", "members": [], "condition": {"expression": " "}}
                ],
            },
            "condition.expression is required",
        ),
        (
            {
                "version": 3,
                "bindings": [
                    {"role": "roles/viewer", "members": [], "condition": {"expression": "nope("}}
                ],
            },
            "is not supported",
        ),
        (
            {
                "version": 3,
                "bindings": [
                    {
                        "role": "roles/viewer",
                        "members": [],
                        "condition": {"expression": "true", "title": "t" * 101},
                    }
                ],
            },
            "title is limited to 100",
        ),
        (
            {
                "version": 3,
                "bindings": [
                    {
                        "role": "roles/viewer",
                        "members": [],
                        "condition": {"expression": "true", "x": 1},
                    }
                ],
            },
            'Unknown name "x"',
        ),
        ({"auditConfigs": [1]}, "auditConfigs must be a list of objects"),
    ],
)
def test_parse_policy_rejects(raw: object, message: str) -> None:
    """Malformed policies are INVALID_ARGUMENT with a message naming the problem."""
    with pytest.raises(InvalidArgument) as caught:
        parse_policy(raw)
    assert message in caught.value.message


def test_parse_policy_member_limit() -> None:
    """More than 1 500 members across bindings is refused; exactly 1 500 is fine."""
    members = [f"user:u{i}@example.com" for i in range(MAX_MEMBERS)]
    half = MAX_MEMBERS // 2
    ok: dict[str, Any] = {
        "bindings": [
            {"role": "roles/viewer", "members": members[:half]},
            {"role": "roles/editor", "members": members[half:]},
        ]
    }
    assert sum(len(b.members) for b in parse_policy(ok).bindings) == MAX_MEMBERS
    ok["bindings"][0]["members"].append("user:one-more@example.com")
    with pytest.raises(InvalidArgument, match="larger than the maximum allowed size 1500"):
        parse_policy(ok)


@pytest.mark.parametrize(
    "member",
    [
        "user:a@example.com",
        "serviceAccount:sa@p.iam.gserviceaccount.com",
        "group:g@example.com",
        "domain:example.com",
        "allUsers",
        "allAuthenticatedUsers",
        "deleted:user:a@example.com?uid=123",
        "deleted:serviceAccount:sa@p.iam.gserviceaccount.com?uid=123",
        "principal://iam.googleapis.com/projects/1/locations/global/workforcePools/p/subject/s",
        "principalSet://goog/public:all",
        "serviceAccount:my-project.svc.id.goog[ns/ksa]",
    ],
)
def test_member_forms_accepted(member: str) -> None:
    """Every documented member form is accepted."""
    assert policy({"role": "roles/viewer", "members": [member]}).bindings[0].members == (member,)


@pytest.mark.parametrize(
    "member",
    [
        "user:a@example.com\n",
        "domain:example.com\n",
        "domain:localhost",
        "deleted:user:a@example.com",
        "deleted:domain:example.com?uid=1",
        "principal:relative",
        "serviceAccount:my-project.svc.id.goog[ns]",
        "serviceAccount:my-project.svc.id.goog[ns/ksa]\n",
        "AllUsers",
        "",
    ],
)
def test_member_forms_rejected(member: str) -> None:
    """Malformed members — including a trailing newline — are refused."""
    with pytest.raises(InvalidArgument):
        policy({"role": "roles/viewer", "members": [member]})


# policy_to_json -------------------------------------------------------------------------------


def test_policy_to_json_of_empty_policy() -> None:
    """An empty policy renders as version and etag only (no empty bindings list)."""
    assert policy_to_json(Policy(etag="ACAB")) == {"version": 1, "etag": "ACAB"}


def test_policy_to_json_at_version_3_keeps_conditions() -> None:
    """At version 3 a conditional policy renders its conditions and version 3."""
    parsed = policy(
        {
            "role": "roles/viewer",
            "members": ["user:a@x.io"],
            "condition": {"title": "t", "description": "d", "expression": BEFORE},
        },
        version=3,
    )
    assert policy_to_json(dataclasses.replace(parsed, etag="e"), 3) == {
        "version": 3,
        "etag": "e",
        "bindings": [
            {
                "role": "roles/viewer",
                "members": ["user:a@x.io"],
                "condition": {"title": "t", "description": "d", "expression": BEFORE},
            }
        ],
    }


@pytest.mark.parametrize("requested", [0, 1])
def test_policy_to_json_downgrade_renames_roles(requested: int) -> None:
    """Below version 3, conditional bindings lose the condition and get a _withcond_ role."""
    parsed = policy(
        {"role": "roles/viewer", "members": ["user:a@x.io"]},
        {"role": "roles/viewer", "members": ["user:b@x.io"], "condition": {"expression": BEFORE}},
        {"role": "roles/viewer", "members": ["user:c@x.io"], "condition": {"expression": AFTER}},
        version=3,
    )
    rendered = policy_to_json(parsed, requested)
    assert rendered["version"] == 1
    roles = [b["role"] for b in rendered["bindings"]]
    assert roles[0] == "roles/viewer"
    assert all(r.startswith("roles/viewer_withcond_") for r in roles[1:])
    assert roles[1] != roles[2]  # different conditions hash differently
    assert all("condition" not in b for b in rendered["bindings"])
    assert policy_to_json(parsed, requested) == rendered  # the hash is stable


def test_policy_to_json_keeps_audit_configs() -> None:
    """auditConfigs are rendered as stored."""
    audit = {"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}
    parsed = parse_policy({"auditConfigs": [audit]})
    assert policy_to_json(parsed)["auditConfigs"] == [audit]


def test_policy_from_stored_inverts_rendering() -> None:
    """policy_from_stored rebuilds what policy_to_json(…, 3) wrote, etag from the record."""
    parsed = policy(
        {"role": "roles/viewer", "members": ["user:a@x.io"]},
        {
            "role": "roles/editor",
            "members": ["user:b@x.io"],
            "condition": {"title": "t", "expression": BEFORE},
        },
        version=3,
    )
    stored = policy_to_json(parsed, 3)
    assert policy_from_stored(stored, "etag-1") == dataclasses.replace(parsed, etag="etag-1")


# decide ---------------------------------------------------------------------------------------


VIEWER_FOR_ALICE = {"role": "roles/iam.serviceAccountViewer", "members": ["user:alice@example.com"]}


@pytest.mark.parametrize(
    ("binding", "principal", "permission", "expected"),
    [
        (VIEWER_FOR_ALICE, ALICE, GET, True),
        (VIEWER_FOR_ALICE, ALICE, MINT, False),  # not in the role
        (VIEWER_FOR_ALICE, Principal("user", "ALICE@Example.com"), GET, True),  # case-insensitive
        (VIEWER_FOR_ALICE, Principal("user", "bob@example.com"), GET, False),
        (VIEWER_FOR_ALICE, Principal("serviceAccount", "alice@example.com"), GET, False),
        ({**VIEWER_FOR_ALICE, "members": ["group:alice@example.com"]}, ALICE, GET, False),
        ({**VIEWER_FOR_ALICE, "members": ["domain:example.com"]}, ALICE, GET, True),
        (
            {**VIEWER_FOR_ALICE, "members": ["domain:example.com"]},
            Principal("user", "a@x.io"),
            GET,
            False,
        ),
        ({**VIEWER_FOR_ALICE, "members": ["domain:p.iam.gserviceaccount.com"]}, ROBOT, GET, False),
        ({**VIEWER_FOR_ALICE, "members": ["allUsers"]}, ROBOT, GET, True),
        ({**VIEWER_FOR_ALICE, "members": ["allAuthenticatedUsers"]}, ALICE, GET, True),
        ({**VIEWER_FOR_ALICE, "members": [f"serviceAccount:{ROBOT.email}"]}, ROBOT, GET, True),
        ({**VIEWER_FOR_ALICE, "members": [f"user:{ROBOT.email}"]}, ROBOT, GET, False),
        (
            {**VIEWER_FOR_ALICE, "members": [f"deleted:serviceAccount:{ROBOT.email}?uid=1"]},
            ROBOT,
            GET,
            False,
        ),
        ({"role": "roles/owner", "members": ["user:alice@example.com"]}, ALICE, MINT, False),
        (
            {"role": "roles/iam.serviceAccountTokenCreator", "members": ["user:alice@example.com"]},
            ALICE,
            MINT,
            True,
        ),
    ],
)
def test_decide_table(
    binding: dict[str, Any], principal: Principal, permission: str, expected: bool
) -> None:
    """Members match by kind and email (domains match users only); roles bound permissions."""
    assert allowed(policy(binding), principal, permission) is expected


@pytest.mark.parametrize(("expression", "expected"), [(BEFORE, True), (AFTER, False)])
def test_decide_evaluates_conditions(expression: str, expected: bool) -> None:
    """A conditional binding grants only when its condition holds now."""
    parsed = policy({**VIEWER_FOR_ALICE, "condition": {"expression": expression}}, version=3)
    decision = decide([parsed], ALICE, GET, CTX)
    assert decision.allowed is expected
    if expected:
        assert decision == Decision(True, "roles/iam.serviceAccountViewer", expression)


def test_decide_reads_resource_name() -> None:
    """resource.name in a condition is the context's resource."""
    expression = 'resource.name.endsWith("/serviceAccounts/sa@p.iam.gserviceaccount.com")'
    parsed = policy({**VIEWER_FOR_ALICE, "condition": {"expression": expression}}, version=3)
    assert allowed(parsed, ALICE, GET)
    elsewhere = dataclasses.replace(CTX, resource_name="projects/p/serviceAccounts/x@y.z")
    assert not decide([parsed], ALICE, GET, elsewhere).allowed


def test_decide_unions_inherited_policies() -> None:
    """A grant in any policy of the chain (project, then account) allows."""
    project = policy({"role": "roles/viewer", "members": ["user:bob@example.com"]})
    account = policy(VIEWER_FOR_ALICE)
    assert allowed([project, account], ALICE, GET)
    assert allowed([project, account], Principal("user", "bob@example.com"), GET)
    assert not allowed([project], ALICE, GET)


def test_decide_reports_the_granting_role() -> None:
    """The decision names the role that granted, for the audit log."""
    assert decide([policy(VIEWER_FOR_ALICE)], ALICE, GET, CTX) == Decision(
        True, "roles/iam.serviceAccountViewer"
    )


def test_decide_with_no_policies_denies() -> None:
    """Deny by default: no policy, no access."""
    assert decide([], ALICE, GET, CTX) == Decision(False)
    assert decide([Policy()], ALICE, GET, CTX) == Decision(False)


def test_stored_unknown_role_grants_nothing() -> None:
    """A role unknown to the catalogue (e.g. a downgraded _withcond_ one) grants nothing."""
    stored = policy_from_stored(
        {
            "bindings": [
                {"role": "roles/viewer_withcond_abc", "members": ["user:alice@example.com"]}
            ]
        },
        "e",
    )
    assert not allowed(stored, ALICE, GET)


# properties -----------------------------------------------------------------------------------

EMAILS = st.sampled_from(
    ["alice@example.com", "bob@example.com", "robot@p.iam.gserviceaccount.com", "eve@other.org"]
)
MEMBERS = st.one_of(
    st.builds(lambda e: f"user:{e}", EMAILS),
    st.builds(lambda e: f"serviceAccount:{e}", EMAILS),
    st.builds(lambda e: f"group:{e}", EMAILS),
    st.sampled_from(["domain:example.com", "domain:other.org"]),
)
CONDITIONS = st.one_of(
    st.none(),
    st.sampled_from([BEFORE, AFTER, 'resource.name.startsWith("projects/p/")', "false"]).map(
        lambda e: {"title": "t", "expression": e}
    ),
)
ROLE_NAMES = st.sampled_from(sorted(ROLES))
PERMISSIONS = st.sampled_from(sorted(set().union(*ROLES.values())))
PRINCIPALS = st.builds(Principal, st.sampled_from(["user", "serviceAccount"]), EMAILS)


@st.composite
def raw_bindings(draw: st.DrawFn) -> dict[str, Any]:
    binding: dict[str, Any] = {
        "role": draw(ROLE_NAMES),
        "members": draw(st.lists(MEMBERS, max_size=4)),
    }
    condition = draw(CONDITIONS)
    if condition is not None:
        binding["condition"] = condition
    return binding


RAW_POLICIES = st.builds(
    lambda bindings, etag: {"version": 3, "etag": etag, "bindings": bindings},
    st.lists(raw_bindings(), max_size=6),
    st.sampled_from(["", "ACAB", "BwWWja0YfJA="]),
)


@FAST
@given(RAW_POLICIES, raw_bindings(), PRINCIPALS, PERMISSIONS)
def test_adding_a_binding_never_removes_a_permission(
    raw: dict[str, Any], extra: dict[str, Any], principal: Principal, permission: str
) -> None:
    """Whatever is allowed before adding a binding is still allowed after."""
    before = allowed(parse_policy(raw), principal, permission)
    grown = parse_policy({**raw, "bindings": [*raw["bindings"], extra]})
    assert not before or allowed(grown, principal, permission)


@FAST
@given(RAW_POLICIES, PERMISSIONS)
def test_member_in_no_binding_is_never_allowed(raw: dict[str, Any], permission: str) -> None:
    """A principal named by no binding (not even by domain) is denied everything."""
    stranger = Principal("user", "stranger@nowhere.example")
    assert not allowed(parse_policy(raw), stranger, permission)


@FAST
@given(RAW_POLICIES, PRINCIPALS, PERMISSIONS)
def test_allowed_means_some_binding_grants(
    raw: dict[str, Any], principal: Principal, permission: str
) -> None:
    """An allow is always explained by a binding whose role holds the permission."""
    parsed = parse_policy(raw)
    decision = decide([parsed], principal, permission, CTX)
    if decision.allowed:
        assert permission in permissions_of(decision.role)
        assert any(b.role == decision.role for b in parsed.bindings)


@FAST
@given(RAW_POLICIES)
def test_merging_is_idempotent(raw: dict[str, Any]) -> None:
    """Parsing an already normalised policy changes nothing."""
    once = parse_policy(raw)
    again = parse_policy({**raw, "bindings": policy_to_json(once, 3).get("bindings", [])})
    assert again == once


@FAST
@given(RAW_POLICIES)
def test_duplicating_bindings_changes_nothing(raw: dict[str, Any]) -> None:
    """Sending every binding twice yields the same policy (and the same decisions)."""
    assert parse_policy({**raw, "bindings": raw["bindings"] * 2}) == parse_policy(raw)


@FAST
@given(RAW_POLICIES)
def test_round_trip_at_version_3(raw: dict[str, Any]) -> None:
    """parse_policy(policy_to_json(parse_policy(x), 3)) == parse_policy(x)."""
    parsed = parse_policy(raw)
    assert parse_policy(policy_to_json(parsed, 3)) == parsed


@FAST
@given(RAW_POLICIES)
def test_stored_round_trip(raw: dict[str, Any]) -> None:
    """What the store keeps (version 3 JSON) rebuilds the same policy."""
    parsed = parse_policy(raw)
    assert policy_from_stored(policy_to_json(parsed, 3), parsed.etag) == parsed


@FAST
@given(RAW_POLICIES, PRINCIPALS, PERMISSIONS)
def test_version_1_view_never_grants_more(
    raw: dict[str, Any], principal: Principal, permission: str
) -> None:
    """The downgraded view, evaluated as a policy, grants at most the unconditional part."""
    parsed = parse_policy(raw)
    downgraded = policy_from_stored(policy_to_json(parsed, 1), parsed.etag)
    unconditional = Policy(bindings=tuple(b for b in parsed.bindings if b.condition is None))
    assert allowed(downgraded, principal, permission) == allowed(
        unconditional, principal, permission
    )
    assert all("_withcond_" in b.role for b in downgraded.bindings if b.role not in ROLES)
