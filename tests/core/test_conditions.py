"""Tests for tokensmith.core.conditions, the IAM Conditions (CEL subset) compiler."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokensmith.core.conditions import (
    Condition,
    ConditionContext,
    ConditionError,
    compile_condition,
)

NOW = datetime(2026, 6, 15, 12, 30, 15, 250_000, tzinfo=UTC)  # a Monday, day 166 of the year
SA_NAME = "projects/p/serviceAccounts/sa@p.iam.gserviceaccount.com"
SA_TYPE = "iam.googleapis.com/ServiceAccount"
SERVICE = "iam.googleapis.com"
END_OF_TIME = datetime.max.replace(tzinfo=UTC)

# Hypothesis: no example database on disk, and a deadline that catches hangs without flaking.
FAST = settings(max_examples=60, deadline=timedelta(seconds=2), database=None)


def make_ctx(
    time: datetime = NOW, name: str = SA_NAME, type_: str = SA_TYPE, service: str = SERVICE
) -> ConditionContext:
    return ConditionContext(
        request_time=time, resource_name=name, resource_type=type_, resource_service=service
    )


def holds(expression: str, ctx: ConditionContext | None = None) -> bool:
    return compile_condition(expression).evaluate(ctx or make_ctx())


# ---------------------------------------------------------------------------------------------
# (a) evaluation tables

TRUE_AT_NOW = [
    'request.time < timestamp("2027-01-01T00:00:00Z")',
    'request.time >= timestamp("2026-06-15T12:30:15.25Z")',
    'request.time == timestamp("2026-06-15T14:30:15.250+02:00")',
    'request.time != timestamp("2026-06-15T12:30:15Z")',
    'resource.name.startsWith("projects/p/serviceAccounts/")',
    'resource.name.endsWith("@p.iam.gserviceaccount.com")',
    'resource.name.contains("/serviceAccounts/")',
    f'resource.type == "{SA_TYPE}" && resource.service == "{SERVICE}"',
    f'resource.type in ["storage.googleapis.com/Bucket", "{SA_TYPE}"]',
    '!(resource.type in ["storage.googleapis.com/Bucket"])',
    "request.time.getHours() == 12",
    'request.time.getHours("UTC") == 12',
    'request.time.getHours("Europe/Berlin") == 14',
    "request.time.getHours('America/New_York') == 8",
    'request.time.getHours("+05:30") == 18 && request.time.getMinutes("+05:30") == 0',
    "request.time.getDayOfWeek() == 1",
    'request.time.getDayOfWeek("Pacific/Kiritimati") == 2',
    "request.time.getDayOfMonth() == 14 && request.time.getDate() == 15",
    "request.time.getMonth() == 5 && request.time.getFullYear() == 2026",
    "request.time.getDayOfYear() == 165",
    "request.time.getSeconds() == 15 && request.time.getMilliseconds() == 250",
    'resource.name.extract("projects/{project}/serviceAccounts/") == "p"',
    'resource.name.extract("serviceAccounts/{account}") == "sa@p.iam.gserviceaccount.com"',
    'resource.name.extract("folders/{folder}/") == ""',
    'resource.name.matches("^projects/[a-z]+/serviceAccounts/")',
    'resource.name.matches("serviceAccounts")',
    r'resource.name.matches(r"sa@p\.iam") && resource.name.matches("sa@p\\.iam")',
    '!"foo\\n".matches("^foo$")',
    'resource.name.matches("(?i)^PROJECTS/")',
    "size(resource.service) == 18 && resource.service.size() == 18",
    'size("h\\u00e9llo") == 5 && "h\\u00e9llo" == "héllo"',
    "size([1, 2, 3,]) == 3",
    'request.time + duration("3600s") > timestamp("2026-06-15T13:30:00Z")',
    'duration("60s") + request.time > request.time',
    'request.time - duration("1.5h") > timestamp("2026-06-15T11:00:00Z")',
    'request.time - timestamp("2026-06-15T12:00:00Z") > duration("30m")',
    'duration("1h30m") == duration("5400s") && duration("-1s") < duration("0")',
    "\"a\\tb\" == 'a\\u0009b' && '\\x41' == \"A\" && \"\\101\" == 'A'",
    "true || false && false",
    "!true == false",
    "1 < 2 && -3 < -2 && 10 >= 10 && -9223372036854775808 < 9223372036854775807",
    '"abc" < "abd" && "b" > "abc"',
    '// temporary access\nresource.name != ""  // trailing comment\n&& true',
    "((((true))))",
]
FALSE_AT_NOW = [
    'request.time > timestamp("2027-01-01T00:00:00+02:00")',
    'resource.name.startsWith("projects/other/")',
    "(true || false) && false",
    "resource.type in []",
    'resource.name.matches("^serviceAccounts")',
    'resource.name.extract("projects/{project}/") == "other"',
    "request.time.getHours() == 13",
    '!resource.name.contains("sa@")',
]


@pytest.mark.parametrize("expression", TRUE_AT_NOW)
def test_expressions_true_at_now(expression: str) -> None:
    """Each supported construct evaluates to true for the reference context."""
    assert holds(expression) is True


@pytest.mark.parametrize("expression", FALSE_AT_NOW)
def test_expressions_false_at_now(expression: str) -> None:
    """Each supported construct evaluates to false when it should."""
    assert holds(expression) is False


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), True),
        (datetime(2027, 1, 1, tzinfo=UTC), False),
        (datetime(2027, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), True),
        (datetime(2030, 1, 1, tzinfo=UTC), False),
    ],
)
def test_temporary_access_expires(time: datetime, expected: bool) -> None:
    """The usual "temporary access" condition grants before the expiry instant and not after."""
    expression = 'request.time < timestamp("2027-01-01T00:00:00Z")'
    assert holds(expression, make_ctx(time=time)) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("projects/p/serviceAccounts/a@p.iam.gserviceaccount.com", True),
        ("projects/p/serviceAccounts/b@p.iam.gserviceaccount.com", False),
        ("projects/q/serviceAccounts/a@p.iam.gserviceaccount.com", False),
        ("", False),
    ],
)
def test_resource_scoped_binding(name: str, expected: bool) -> None:
    """A resource-name condition grants only on the named service account."""
    expression = (
        'resource.name.extract("projects/{project}/") == "p" && '
        'resource.name.endsWith("/a@p.iam.gserviceaccount.com")'
    )
    assert holds(expression, make_ctx(name=name)) is expected


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (datetime(2026, 1, 5, 8, 0, tzinfo=UTC), True),  # 09:00 Berlin on a Monday
        (datetime(2026, 1, 5, 16, 59, tzinfo=UTC), True),  # 17:59 Berlin
        (datetime(2026, 1, 5, 17, 0, tzinfo=UTC), False),  # 18:00 Berlin
        (datetime(2026, 1, 3, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 7, 6, 7, 0, tzinfo=UTC), True),  # 09:00 Berlin in summer time
    ],
)
def test_office_hours_in_time_zone(time: datetime, expected: bool) -> None:
    """getHours/getDayOfWeek honour the IANA zone, including daylight saving time."""
    expression = """
        request.time.getDayOfWeek("Europe/Berlin") >= 1 &&
        request.time.getDayOfWeek("Europe/Berlin") <= 5 &&
        request.time.getHours("Europe/Berlin") >= 9 &&
        request.time.getHours("Europe/Berlin") < 18
    """
    assert holds(expression, make_ctx(time=time)) is expected


# ---------------------------------------------------------------------------------------------
# (b) rejection table

REJECTED = [
    ("", "expression is empty"),
    ("  // only a comment\n", "expression is empty"),
    ("x" * 12_801, "too long"),
    ("request.auth.claims.sub == 'x'", "unknown attribute 'request.auth.claims.sub'"),
    ("resource.labels == 'x'", "unknown attribute 'resource.labels'"),
    ("resource.name.size == 1", "unknown attribute 'resource.name.size'"),
    ("api.getAttribute('iam.googleapis.com/x', []) == 1", "unknown identifier 'api'"),
    ("foo(1) == 1", "unknown function 'foo'"),
    ("resource.name.lowerAscii() == 'a'", "unknown method 'lowerAscii'"),
    ("null == null", "null is not supported"),
    ('request.time < "x"', "cannot compare timestamp with string"),
    ("resource.name > 3", "cannot compare string with int"),
    ("true < false", "cannot compare bool with bool"),
    ("true false", "unexpected 'false' after a complete expression"),
    ("(true", "expected ')' but found end of expression"),
    ("((true)", "expected ')'"),
    ("true)", "unexpected ')'"),
    ("resource.name.startsWith('a'", "expected ',' or ')'"),
    ("true &&", "unexpected end of expression"),
    ('resource.name == "\\d"', "invalid escape sequence '\\d'"),
    ('resource.name == "\\ud800"', "not a valid code point"),
    ('resource.name == "abc', "unterminated string literal"),
    ('resource.name == """abc"""', "triple-quoted strings are not supported"),
    ('resource.name == b"abc"', "bytes literals are not supported"),
    ('timestamp("2027-13-01T00:00:00Z") > request.time', "invalid timestamp"),
    ('timestamp("2027-02-30T00:00:00Z") > request.time', "invalid timestamp"),
    ('timestamp("2027-01-01") > request.time', "expected RFC 3339"),
    ('timestamp("2027-01-01T00:00:00") > request.time', "expected RFC 3339"),
    ('timestamp("2027-01-01T00:00:00+24:00") > request.time', "bad UTC offset"),
    ('timestamp("2027-01-01T00:00:00.0000001Z") > request.time', "sub-microsecond"),
    ('timestamp("0001-01-01T00:00:00+01:00") > request.time', "invalid timestamp"),
    ("timestamp(resource.name) > request.time", "needs a string literal argument"),
    ('duration("1d") > duration("1s")', "invalid duration"),
    ('duration("3600") > duration("1s")', "invalid duration"),
    ('duration("1ns") > duration("0")', "sub-microsecond"),
    ('duration("3000000h") > duration("0")', "out of range"),
    ('duration("' + "9" * 5_000 + 's") > duration("0")', "out of range"),
    ("resource.name", "must evaluate to bool, not string"),
    ("1", "must evaluate to bool, not int"),
    ('request.time + duration("1s")', "must evaluate to bool, not timestamp"),
    ('request.time.getHours("Mars/Olympus") == 1', "unknown time zone 'Mars/Olympus'"),
    ('request.time.getHours("localtime") == 1', "unknown time zone 'localtime'"),
    ('request.time.getHours("+25:00") == 1', "unknown time zone '+25:00'"),
    ("request.time.getHours(1) == 1", "time zone must be a string, not int"),
    ('request.time.getHours("UTC", 1) == 1', "takes 0 or 1 argument(s), got 2"),
    ("resource.name.getHours() == 1", "method 'getHours' is not supported on string"),
    ("request.time.startsWith('a')", "method 'startsWith' is not supported on timestamp"),
    ("resource.name.startsWith(1)", "startsWith() needs a string argument, not int"),
    ("resource.name.startsWith('a', 'b')", "takes 1 argument(s), got 2"),
    ("resource.name.matches(resource.type)", "needs a string literal argument"),
    ("resource.name.matches('(unclosed')", "invalid regular expression"),
    ("resource.name.matches('(?=ahead)')", "unsupported group syntax '(?='"),
    ("resource.name.matches('(?m)^a$')", "unsupported group syntax"),
    (r"resource.name.matches(r'(a)\1')", "backreferences are not supported"),
    ("resource.name.matches('[[:alpha:]]')", "inside a character class"),
    ("resource.name.matches('a{,3}')", "write '{0,n}'"),
    ("resource.name.matches('a*+')", "possessive quantifiers"),
    ("resource.name.matches('" + "(" * 70 + "')", "groups are nested too deeply"),
    ("resource.name.extract('projects/') == ''", "exactly one {name} placeholder"),
    ("resource.name.extract('{a}/{b}') == ''", "exactly one {name} placeholder"),
    ("size(request.time) == 1", "size() is not supported on timestamp"),
    ("1.5 < 2", "only decimal integers"),
    ("0x10 == 16", "only decimal integers"),
    ("1u == 1u", "only decimal integers"),
    ("9223372036854775808 > 0", "out of the 64-bit range"),
    ("-resource.name == ''", "unary '-' is only supported before an integer literal"),
    ("!resource.name", "operator '!' needs a bool operand, not string"),
    ("resource.name && true", "operator '&&' needs bool operands, not string"),
    ("true || 1", "operator '||' needs bool operands, not int"),
    ("1 + 2 == 3", "operator '+' is not supported for int and int"),
    ("request.time + request.time > request.time", "not supported for timestamp and timestamp"),
    ("1 * 2 == 2", "arithmetic operator '*' is not supported"),
    ("true ? true : false", "conditional operator"),
    ("resource.name = 'a'", "use '=='"),
    ("true & false", "use '&&'"),
    ("true | false", "use '||'"),
    ("{'a': 1} == {}", "map literals are not supported"),
    ("resource.name[0] == 'p'", "indexing with '[...]' is not supported"),
    ("resource.type in 'abc'", "right-hand side of 'in' must be a list, not string"),
    ("resource.type in [1, 2]", "cannot look for string in list<int>"),
    ("resource.type in ['a', 1]", "list elements must share one type"),
    ("[[1]] == [[1]]", "nested lists are not supported"),
    ("[1] == [1]", "cannot compare list<int> with list<int>"),
    ("request.time.1 == 1", "expected a method name"),
    ("'a'.b == 'a'", "field 'b' does not exist on string"),
    ("resource.name ~ 'a'", "unexpected character '~'"),
    ("(" * 100 + "true" + ")" * 100, "nested too deeply"),
    ("!" * 100 + "true", "nested too deeply"),
]


@pytest.mark.parametrize(("expression", "message"), REJECTED)
def test_rejected_with_clear_message(expression: str, message: str) -> None:
    """Unsupported or malformed expressions raise ConditionError naming the problem."""
    with pytest.raises(ConditionError, match=re.escape(message)):
        compile_condition(expression)


def test_error_reports_line_and_column() -> None:
    """Parse errors carry the 1-based line and column of the offending token."""
    with pytest.raises(ConditionError) as single:
        compile_condition("resource.name > 3")
    assert (single.value.line, single.value.column) == (1, 15)
    assert str(single.value).endswith("(column 15)")
    with pytest.raises(ConditionError) as multi:
        compile_condition("true &&\n  nope")
    assert (multi.value.line, multi.value.column) == (2, 3)
    assert "(line 2, column 3)" in str(multi.value)


def test_condition_error_is_value_error() -> None:
    """ConditionError subclasses ValueError so generic validation handlers catch it."""
    assert issubclass(ConditionError, ValueError)


def test_expression_at_length_limit_is_accepted() -> None:
    """An expression of exactly 12,800 characters is still accepted."""
    prefix = 'resource.name == "'
    expression = prefix + "a" * (12_800 - len(prefix) - 1) + '"'
    assert len(expression) == 12_800
    assert holds(expression, make_ctx(name="a" * (12_800 - len(prefix) - 1)))


def test_long_flat_chains_do_not_recurse() -> None:
    """Long &&/|| chains compile and evaluate without hitting the recursion limit."""
    assert holds(" && ".join(["true"] * 1_500))
    assert holds(" || ".join(["false"] * 1_300 + ["true"]))
    assert not holds(" && ".join(["true"] * 1_499 + ["false"]))


# ---------------------------------------------------------------------------------------------
# runtime errors and the public types


@pytest.mark.parametrize(
    ("expression", "ctx"),
    [
        ('request.time + duration("7200s") > request.time', make_ctx(time=END_OF_TIME)),
        ('!(request.time + duration("7200s") > request.time)', make_ctx(time=END_OF_TIME)),
        ('request.time.getHours("+05:00") >= 0', make_ctx(time=END_OF_TIME)),
        ('request.time - timestamp("0001-01-01T00:00:00Z") > duration("1s")', make_ctx()),
        ("request.time.getHours(resource.service) >= 0", make_ctx(service="Nowhere/Land")),
        ("!(request.time.getHours(resource.service) >= 0)", make_ctx(service="Nowhere/Land")),
        ("request.time.getHours(resource.service) >= 0 || true", make_ctx(service="../../etc")),
    ],
)
def test_runtime_errors_deny(expression: str, ctx: ConditionContext) -> None:
    """A runtime error (overflow, unknown dynamic zone) makes the condition false, even under !."""
    assert holds(expression, ctx) is False


def test_short_circuit_skips_erroring_operand() -> None:
    """`true || <error>` is true because the erroring operand is never evaluated."""
    expression = "true || request.time.getHours(resource.service) >= 0"
    assert holds(expression, make_ctx(service="Nowhere/Land")) is True


def test_dynamic_time_zone_is_resolved_at_runtime() -> None:
    """A non-literal time zone argument is looked up per evaluation."""
    expression = "request.time.getHours(resource.service) == 14"
    assert holds(expression, make_ctx(service="Europe/Berlin")) is True
    assert holds(expression, make_ctx(service="UTC")) is False


def test_context_rejects_naive_time() -> None:
    """A naive request_time is refused: it names no instant."""
    with pytest.raises(ValueError, match="timezone-aware"):
        ConditionContext(request_time=datetime(2026, 1, 1))


def test_condition_is_value_object() -> None:
    """Conditions compare and hash by expression, are immutable and validate on construction."""
    first, second = compile_condition("true"), Condition("true")
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, Condition("false")}) == 2
    assert repr(first) == "Condition(expression='true')"
    with pytest.raises(AttributeError):
        first.expression = "false"  # type: ignore[misc]
    with pytest.raises(ConditionError):
        Condition("nope")


def test_non_string_expression_rejected() -> None:
    """A non-string expression is a ConditionError, not a TypeError."""
    with pytest.raises(ConditionError, match="must be a string"):
        compile_condition(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# (c) properties

utc_datetimes = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
COMPARISONS: dict[str, Callable[[datetime, datetime], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@FAST
@given(a=utc_datetimes, t=utc_datetimes, zone=offsets, op=st.sampled_from(sorted(COMPARISONS)))
def test_timestamp_comparison_matches_python(
    a: datetime, t: datetime, zone: timezone, op: str
) -> None:
    """`request.time <op> timestamp(a)` holds exactly when t <op> a, whatever a's UTC offset."""
    literal = a.astimezone(zone).isoformat()
    condition = compile_condition(f'request.time {op} timestamp("{literal}")')
    assert condition.evaluate(make_ctx(time=t)) is COMPARISONS[op](t, a)


@FAST
@given(t=utc_datetimes, seconds=st.integers(min_value=-(10**9), max_value=10**9))
def test_duration_arithmetic_matches_python(t: datetime, seconds: int) -> None:
    """`request.time + duration(Ns)` equals Python's t + N seconds (false on overflow)."""
    try:
        expected = (t + timedelta(seconds=seconds)).isoformat()
    except OverflowError:
        expected = None
    expression = f'request.time + duration("{seconds}s") == timestamp("{expected}")'
    if expected is None:
        expression = f'request.time + duration("{seconds}s") > request.time || true == false'
    assert holds(expression, make_ctx(time=t)) is (expected is not None)


Model = Callable[[ConditionContext], bool]
PREFIXES = ["", "projects/", "projects/p/", "projects/q/", "folders/"]
TYPES = [SA_TYPE, "storage.googleapis.com/Bucket"]
ZONES = ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/Los_Angeles"]


def _starts_with(prefix: str) -> tuple[str, Model]:
    return f'resource.name.startsWith("{prefix}")', lambda c: c.resource_name.startswith(prefix)


def _type_is(value: str) -> tuple[str, Model]:
    return f'resource.type == "{value}"', lambda c: c.resource_type == value


def _before(moment: datetime) -> tuple[str, Model]:
    return f'request.time < timestamp("{moment.isoformat()}")', lambda c: c.request_time < moment


def _hour_below(zone: str, hour: int) -> tuple[str, Model]:
    text = f'request.time.getHours("{zone}") < {hour}'
    return text, lambda c: c.request_time.astimezone(ZoneInfo(zone)).hour < hour


atoms = st.one_of(
    st.sampled_from([("true", lambda c: True), ("false", lambda c: False)]),
    st.sampled_from(PREFIXES).map(_starts_with),
    st.sampled_from(TYPES).map(_type_is),
    utc_datetimes.map(_before),
    st.tuples(st.sampled_from(ZONES), st.integers(0, 24)).map(lambda zh: _hour_below(*zh)),
)


def _not(x: tuple[str, Model]) -> tuple[str, Model]:
    return f"!({x[0]})", lambda c: not x[1](c)


def _and(x: tuple[str, Model], y: tuple[str, Model]) -> tuple[str, Model]:
    return f"({x[0]}) && ({y[0]})", lambda c: x[1](c) and y[1](c)


def _or(x: tuple[str, Model], y: tuple[str, Model]) -> tuple[str, Model]:
    return f"{x[0]} || {y[0]}", lambda c: x[1](c) or y[1](c)


bool_exprs = st.recursive(
    atoms,
    lambda inner: st.one_of(
        inner.map(_not),
        st.tuples(inner, inner).map(lambda xy: _and(*xy)),
        st.tuples(inner, inner).map(lambda xy: _or(*xy)),
    ),
    max_leaves=6,
)
contexts = st.builds(
    make_ctx,
    time=utc_datetimes,
    name=st.sampled_from(PREFIXES).map(lambda p: p + "x"),
    type_=st.sampled_from(TYPES),
)


@FAST
@given(expr=bool_exprs, ctx=contexts)
def test_random_expressions_match_model(expr: tuple[str, Model], ctx: ConditionContext) -> None:
    """Generated expressions (atoms under !, &&, ||) evaluate like their Python model."""
    assert holds(expr[0], ctx) is expr[1](ctx)


@FAST
@given(expr=bool_exprs, ctx=contexts)
def test_negation_inverts(expr: tuple[str, Model], ctx: ConditionContext) -> None:
    """`!(X)` is the negation of X for any valid, error-free X."""
    assert holds(f"!({expr[0]})", ctx) is (not holds(expr[0], ctx))


@FAST
@given(x=bool_exprs, y=bool_exprs, ctx=contexts)
def test_and_or_match_python(
    x: tuple[str, Model], y: tuple[str, Model], ctx: ConditionContext
) -> None:
    """`X && Y` and `X || Y` equal Python's `and`/`or` of the parts."""
    hx, hy = holds(x[0], ctx), holds(y[0], ctx)
    assert holds(f"({x[0]}) && ({y[0]})", ctx) is (hx and hy)
    assert holds(f"({x[0]}) || ({y[0]})", ctx) is (hx or hy)


def _compiles_or_rejects(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ConditionError:
        return
    assert isinstance(condition.evaluate(make_ctx()), bool)


@FAST
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes(text: str) -> None:
    """Arbitrary text either compiles or raises ConditionError; nothing else escapes."""
    _compiles_or_rejects(text)


TOKENS = [
    *("(", ")", "[", "]", ",", ".", "!", "-", "+", "&&", "||", "==", "<", ">=", " in "),
    *("true", "false", "1", "0", "'a'", '"projects/"', "r'\\d'", "request", "resource"),
    *("request.time", "resource.name", "resource.type", "size", "timestamp", "duration"),
    *(".startsWith", ".matches", ".extract", ".getHours", ".size", "//c\n", "?", "\\"),
    *('"2027-01-01T00:00:00Z"', '"60s"', '"Europe/Berlin"', '"{x}/"', '"(a|b"', "'[^]'"),
]


@FAST
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_never_crashes(parts: list[str]) -> None:
    """Random sequences of CEL tokens either compile and evaluate to a bool, or are rejected."""
    _compiles_or_rejects(" ".join(parts))
    _compiles_or_rejects("".join(parts))


DEEP = "nested too deeply"


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("(" * 63 + "true" + ")" * 63, None),
        ("(" * 64 + "true" + ")" * 64, DEEP),
        ("(" * 6_000, DEEP),
        ("!" * 63 + "true", None),
        ("!" * 64 + "true", DEEP),
        ("!" * 12_000 + "true", DEEP),
        ("size(" * 2_000 + "'a'" + ")" * 2_000 + " > 0", DEEP),
        ("[" * 6_000, DEEP),
        ("-" * 6_000 + "1 < 0", "unary '-' is only supported before an integer literal"),
        ("resource.name.matches('" + "(" * 64 + "a" + ")" * 64 + "')", None),
        ("resource.name.matches('" + "(" * 6_000 + "')", DEEP),
    ],
)
def test_nesting_limit(expression: str, error: str | None) -> None:
    """Nesting is capped at 64 levels; deeper input is a ConditionError, never a RecursionError."""
    if error is None:
        compile_condition(expression)
    else:
        with pytest.raises(ConditionError, match=re.escape(error)):
            compile_condition(expression)
