"""IAM Conditions: a strict compiler and evaluator for the CEL subset used in role bindings.

A Google IAM role binding may carry a condition written in CEL (Common Expression Language).
This module compiles such an expression once (``compile_condition``) into an immutable
``Condition`` and evaluates it against a ``ConditionContext`` holding the request attributes.

Supported subset (everything else is rejected at compile time with ``ConditionError``, because a
condition that is silently ignored or treated as true would grant access nobody intended):

* literals: ints, ``true``/``false``, strings in single or double quotes (``r"..."`` raw strings)
* attributes: ``request.time`` (timestamp), ``resource.name``/``.type``/``.service`` (strings)
* ``timestamp("<RFC 3339>")``, ``duration("90s")``, timestamp/duration ``+`` and ``-``
* timestamp accessors ``getFullYear``, ``getMonth``, ``getDayOfYear``, ``getDayOfMonth``,
  ``getDate``, ``getDayOfWeek``, ``getHours``, ``getMinutes``, ``getSeconds``,
  ``getMilliseconds``, each with an optional time zone (IANA name or ``"+HH:MM"``)
* string methods ``startsWith``, ``endsWith``, ``contains``, ``matches``, ``extract``, ``size``
* ``== != < <= > >=``, ``&& || !``, ``in`` with list literals, parentheses, ``//`` comments

Evaluation never raises: a runtime error (e.g. timestamp overflow) makes the condition false,
as an erroring IAM condition does not grant.

References:
https://cloud.google.com/iam/docs/conditions-attribute-reference and
https://github.com/google/cel-spec/blob/master/doc/langdef.md
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from fractions import Fraction
from zoneinfo import ZoneInfo

__all__ = ["Condition", "ConditionContext", "ConditionError", "compile_condition"]

_LOG = logging.getLogger(__name__)

_MAX_EXPRESSION_LENGTH = 12_800  # Google's limit for a condition expression
_MAX_DEPTH = 64  # keeps parser and evaluator recursion far below Python's stack limit
_INT64_MAX = 2**63 - 1
# cel-go parses durations with Go's time.ParseDuration: int64 nanoseconds (~292 years).
_MAX_DURATION = timedelta(microseconds=_INT64_MAX // 1000)

# Static types; lists carry their element type, e.g. "list<string>" ("list<>" when empty).
_BOOL, _INT, _STRING, _TIMESTAMP, _DURATION = "bool", "int", "string", "timestamp", "duration"
_EQUATABLE = frozenset({_BOOL, _INT, _STRING, _TIMESTAMP, _DURATION})
_ORDERED = frozenset({_INT, _STRING, _TIMESTAMP, _DURATION})


class ConditionError(ValueError):
    """Expression cannot be parsed or uses something outside the supported subset.

    ``str(e)`` is a user-facing message; ``line``/``column`` (1-based) locate the problem
    when it is tied to a place in the expression.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        where = ""
        if column is not None:
            where = (
                f" (column {column})" if line in (None, 1) else f" (line {line}, column {column})"
            )
        super().__init__(message + where)
        self.message = message
        self.line = line
        self.column = column


class _EvalError(Exception):
    """A runtime error inside a compiled condition; it makes the condition false."""


@dataclass(frozen=True)
class ConditionContext:
    """The request attributes a condition can read."""

    request_time: datetime  # must be timezone-aware
    resource_name: str = ""
    resource_type: str = ""
    resource_service: str = ""

    def __post_init__(self) -> None:
        # A naive datetime has no defined instant; comparing it would be a silent guess.
        if self.request_time.utcoffset() is None:
            raise ValueError("ConditionContext.request_time must be timezone-aware")


_Eval = Callable[[ConditionContext], object]


@dataclass(frozen=True)
class Condition:
    """A compiled condition; equality and hashing use the expression text."""

    expression: str
    _program: _Eval = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiling here means no Condition can exist for an expression we cannot evaluate.
        object.__setattr__(self, "_program", _compile(self.expression))

    def evaluate(self, ctx: ConditionContext) -> bool:
        """Return whether the condition holds for ``ctx``; any runtime error yields False."""
        try:
            return self._program(ctx) is True
        except _EvalError:
            return False
        except Exception:
            # Fail closed: an unexpected bug must deny access rather than crash or grant.
            _LOG.exception("unexpected error evaluating IAM condition %r", self.expression)
            return False


def compile_condition(expression: str) -> Condition:
    """Parse and type-check ``expression``; raise ConditionError if it is not supported."""
    return Condition(expression)


def _compile(expression: object) -> _Eval:
    if not isinstance(expression, str):
        raise ConditionError("condition expression must be a string")
    if len(expression) > _MAX_EXPRESSION_LENGTH:
        raise ConditionError(
            f"expression is too long ({len(expression)} characters; "
            f"the limit is {_MAX_EXPRESSION_LENGTH})"
        )
    return _Parser(expression).parse().fn


# ---------------------------------------------------------------------------------------------
# Lexer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident", "int" (value holds the digits), "string", "op" or "eof"
    value: str
    offset: int


_SKIP = re.compile(r"(?:[ \t\n\r\f]+|//[^\n]*)+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
# Two-character operators first, so "<=" is not read as "<" followed by "=".
_OPERATORS = (
    *("==", "!=", "<=", ">=", "&&", "||"),
    *("<", ">", "!", "+", "-", "(", ")", "[", "]", ",", "."),
)
_CHAR_HINTS = {
    "=": "unexpected '='; use '==' to compare",
    "&": "unexpected '&'; use '&&' for logical and",
    "|": "unexpected '|'; use '||' for logical or",
    "?": "the conditional operator '?:' is not supported",
    ":": "the conditional operator '?:' is not supported",
    "{": "map literals are not supported",
    "}": "map literals are not supported",
}
_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\'\"`?])|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([0-3][0-7]{2}))"
)
_SIMPLE_ESCAPES = dict(zip("abfnrtv\\'\"`?", "\a\b\f\n\r\t\v\\'\"`?", strict=True))


def _error_at(src: str, offset: int, message: str) -> ConditionError:
    line = src.count("\n", 0, offset) + 1
    column = offset - (src.rfind("\n", 0, offset) + 1) + 1
    return ConditionError(message, line=line, column=column)


def _tokenize(src: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        skipped = _SKIP.match(src, pos)
        if skipped:
            pos = skipped.end()
        if pos >= len(src):
            tokens.append(_Token("eof", "", pos))
            return tokens
        token, pos = _next_token(src, pos)
        tokens.append(token)


def _next_token(src: str, pos: int) -> tuple[_Token, int]:
    if src[pos] in "\"'":
        text, end = _scan_string(src, pos, raw=False)
        return _Token("string", text, pos), end
    ident = _IDENT.match(src, pos)
    if ident:
        word, end = ident.group(), ident.end()
        if src[end : end + 1] in ("'", '"'):  # a string prefix such as r"..." or b"..."
            if word in ("r", "R"):
                text, end = _scan_string(src, end, raw=True)
                return _Token("string", text, pos), end
            if word.lower() in ("b", "br", "rb"):
                raise _error_at(src, pos, "bytes literals are not supported")
        return _Token("ident", word, pos), end
    digits = _DIGITS.match(src, pos)
    if digits:
        end = digits.end()
        # Floats, unsigned and hex literals would otherwise lex as an int plus garbage.
        if _IDENT.match(src, end) or re.match(r"\.[0-9]", src[end : end + 2]):
            raise _error_at(src, pos, "unsupported number literal: only decimal integers allowed")
        return _Token("int", digits.group(), pos), end
    for op in _OPERATORS:
        if src.startswith(op, pos):
            return _Token("op", op, pos), pos + len(op)
    char = src[pos]
    if char in "*/%":
        raise _error_at(src, pos, f"arithmetic operator '{char}' is not supported")
    raise _error_at(src, pos, _CHAR_HINTS.get(char, f"unexpected character {char!r}"))


def _scan_string(src: str, pos: int, *, raw: bool) -> tuple[str, int]:
    quote = src[pos]
    if src.startswith(quote * 3, pos):
        raise _error_at(src, pos, "triple-quoted strings are not supported")
    parts: list[str] = []
    i = pos + 1
    while i < len(src) and src[i] not in "\r\n":  # CEL strings cannot span lines
        char = src[i]
        if char == quote:
            return "".join(parts), i + 1
        if char == "\\" and not raw:
            text, i = _scan_escape(src, i)
            parts.append(text)
        else:
            parts.append(char)
            i += 1
    raise _error_at(src, pos, "unterminated string literal")


def _scan_escape(src: str, pos: int) -> tuple[str, int]:
    match = _ESCAPE.match(src, pos)
    if match is None:
        raise _error_at(src, pos, f"invalid escape sequence '{src[pos : pos + 2]}' in string")
    simple, hex2, hex4, hex8, octal = match.groups()
    if simple:
        return _SIMPLE_ESCAPES[simple], match.end()
    code = int(hex2 or hex4 or hex8, 16) if octal is None else int(octal, 8)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise _error_at(src, pos, f"escape sequence '{match.group()}' is not a valid code point")
    return chr(code), match.end()


# ---------------------------------------------------------------------------------------------
# Literal and argument parsing (these raise ValueError; the parser adds the position)

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_OFFSET = re.compile(r"([+-])([0-9]{2}):([0-9]{2})")
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
_DURATION_PART = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)"
_DURATION_RE = re.compile(rf"([-+]?)((?:{_DURATION_PART})+)")
_UNIT_NANOS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,  # micro sign
    "μs": 10**3,  # Greek mu; Go accepts both
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}


def _fixed_offset(text: str) -> timezone | None:
    match = _OFFSET.fullmatch(text)
    if match is None or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        return None
    offset = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    return timezone(-offset if match.group(1) == "-" else offset)


def _parse_timestamp(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        example = "'2027-01-01T00:00:00Z'"
        raise ValueError(f"invalid timestamp {text!r}: expected RFC 3339, e.g. {example}")
    fraction = (match.group(7) or "").ljust(9, "0")
    if fraction[6:] != "000":  # Python datetimes hold microseconds; never round silently
        raise ValueError(f"invalid timestamp {text!r}: sub-microsecond precision is not supported")
    zone = UTC if match.group(8) == "Z" else _fixed_offset(match.group(8))
    if zone is None:
        raise ValueError(f"invalid timestamp {text!r}: bad UTC offset")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
        local = datetime(year, month, day, hour, minute, second, int(fraction[:6]), tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid timestamp {text!r}: {exc}") from None


def _parse_duration(text: str) -> timedelta:
    """Parse Go ``time.ParseDuration`` syntax (as cel-go does): "90s", "1.5h", "-1h30m"."""
    if text == "0":
        return timedelta(0)
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. '3600s', '1.5h' or '1h30m'")
    parts = re.findall(_DURATION_PART, text)
    if sum(len(num) for num, _ in parts) > 40:  # also keeps int() below its digit-count limit
        raise ValueError(f"invalid duration {text!r}: out of range")
    nanos = sum((Fraction(num) * _UNIT_NANOS[unit] for num, unit in parts), Fraction(0))
    if nanos.denominator != 1 or nanos % 1000:
        raise ValueError(f"invalid duration {text!r}: sub-microsecond precision is not supported")
    if nanos > _INT64_MAX:
        raise ValueError(f"invalid duration {text!r}: out of range")
    value = timedelta(microseconds=int(nanos) // 1000)
    return -value if match.group(1) == "-" else value


def _zone(name: str) -> tzinfo | None:
    """Resolve a CEL time zone argument (IANA name or "+HH:MM"), or None if unknown."""
    if name == "UTC":
        return UTC
    if name[:1] in ("+", "-"):
        return _fixed_offset(name)
    # "localtime" mirrors the host's configuration; a policy must not depend on that.
    if name == "localtime" or not _ZONE_NAME.fullmatch(name):
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, LookupError, OSError):
        return None


def _translate_regex(pattern: str) -> str:
    """Map an RE2 pattern onto Python ``re``, rejecting constructs whose meaning differs."""
    out: list[str] = []
    i, depth, in_class, prev = 0, 0, False, ""
    while i < len(pattern):
        char = pattern[i]
        raw = pattern[i : i + 2] if char == "\\" else char
        token = raw
        if in_class:
            if char == "[":  # POSIX classes / nested sets mean different things in Python
                raise ValueError("'[' inside a character class is not supported; escape it")
            in_class = char != "]"
        elif char == "\\":
            if raw[1:] in tuple("123456789"):
                raise ValueError("backreferences are not supported")
            token = "\\Z" if raw == "\\z" else raw
        elif char == "[":
            in_class = True
            raw = token = _class_opening(pattern, i)
        elif char == "(":
            depth += 1
            raw = token = _group_opening(pattern, i)
        elif char == ")":
            depth -= 1
        elif char == "$":
            token = r"\Z"  # Python's '$' also matches before a trailing newline; RE2's does not
        elif char == "+" and prev in ("*", "+", "?", "}"):
            raise ValueError("possessive quantifiers are not supported")
        elif pattern.startswith("{,", i):
            raise ValueError("'{,n}' is not a repetition in RE2; write '{0,n}'")
        if depth > _MAX_DEPTH:
            raise ValueError("groups are nested too deeply")
        out.append(token)
        prev = "" if in_class else raw
        i += len(raw)
    return "".join(out)


def _class_opening(pattern: str, i: int) -> str:
    """Return "[" plus a leading "^" and/or "]", which are literal at the start of a class."""
    end = i + 2 if pattern.startswith("[^", i) else i + 1
    return pattern[i : end + 1] if pattern[end : end + 1] == "]" else pattern[i:end]


_GROUP_FLAGS = re.compile(r"\(\?([a-zA-Z-]*)[:)]")


def _group_opening(pattern: str, i: int) -> str:
    """Return the group opener at ``pattern[i]`` if RE2 and Python agree on its meaning."""
    if not pattern.startswith("(?", i):
        return "("
    for opener in ("(?:", "(?P<"):
        if pattern.startswith(opener, i):
            return opener
    flags = _GROUP_FLAGS.match(pattern, i)
    # Only i and s mean the same in both; m would break the '$' rewrite.
    if flags and flags.group(1) and set(flags.group(1)) <= set("is-"):
        return flags.group()
    found = pattern[i : i + 3]
    raise ValueError(f"unsupported group syntax '{found}' (lookaround, flags or atomic group)")


def _compile_regex(pattern: str) -> re.Pattern[str]:
    translated = _translate_regex(pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. FutureWarning for syntax Python may reinterpret
        try:
            # re.ASCII: RE2's \d, \w, \s and \b are ASCII-only.
            return re.compile(translated, re.ASCII)
        except (re.error, Warning, OverflowError, RecursionError) as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _extract_template(template: str) -> tuple[str, str]:
    match = re.fullmatch(r"([^{}]*)\{[A-Za-z_][A-Za-z0-9_]*\}([^{}]*)", template)
    if match is None:
        raise ValueError(
            f"invalid extract() template {template!r}: it needs exactly one {{name}} placeholder"
        )
    return match.group(1), match.group(2)


# ---------------------------------------------------------------------------------------------
# Runtime helpers: they re-check types so a bug surfaces as _EvalError (deny), never as a grant.


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _EvalError(f"expected bool, got {type(value).__name__}")


def _as_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _EvalError(f"expected string, got {type(value).__name__}")


def _as_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    raise _EvalError(f"expected timestamp, got {type(value).__name__}")


def _as_tuple(value: object) -> tuple[object, ...]:
    if isinstance(value, tuple):
        return value
    raise _EvalError(f"expected list, got {type(value).__name__}")


def _const(value: object) -> _Eval:
    return lambda ctx: value


def _apply1(op: Callable[[object], object], arg: _Eval) -> _Eval:
    return lambda ctx: op(arg(ctx))


def _apply2(op: Callable[[object, object], object], left: _Eval, right: _Eval) -> _Eval:
    return lambda ctx: op(left(ctx), right(ctx))


def _all_of(operands: tuple[_Eval, ...]) -> _Eval:
    # Left to right with short-circuit; an error in an evaluated operand propagates (deny).
    return lambda ctx: all(_as_bool(operand(ctx)) for operand in operands)


def _any_of(operands: tuple[_Eval, ...]) -> _Eval:
    return lambda ctx: any(_as_bool(operand(ctx)) for operand in operands)


def _collect(items: tuple[_Eval, ...]) -> _Eval:
    return lambda ctx: tuple(item(ctx) for item in items)


def _checked_duration(value: timedelta) -> timedelta:
    if abs(value) > _MAX_DURATION:
        raise _EvalError("duration out of range")
    return value


def _add(a: object, b: object) -> object:
    try:
        if isinstance(a, datetime) and isinstance(b, timedelta):
            return a + b
        if isinstance(a, timedelta) and isinstance(b, datetime):
            return b + a
        if isinstance(a, timedelta) and isinstance(b, timedelta):
            return _checked_duration(a + b)
    except OverflowError as exc:
        raise _EvalError("timestamp out of range") from exc
    raise _EvalError("unsupported '+' operands")


def _subtract(a: object, b: object) -> object:
    try:
        if isinstance(a, datetime) and isinstance(b, timedelta):
            return a - b
        if isinstance(a, datetime) and isinstance(b, datetime):
            return _checked_duration(a - b)
        if isinstance(a, timedelta) and isinstance(b, timedelta):
            return _checked_duration(a - b)
    except OverflowError as exc:
        raise _EvalError("timestamp out of range") from exc
    raise _EvalError("unsupported '-' operands")


def _compare(a: object, b: object) -> int:
    """Three-way comparison of two values of the same ordered type."""
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
        return (a > b) - (a < b)
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (a > b) - (a < b)
    if isinstance(a, timedelta) and isinstance(b, timedelta):
        return (a > b) - (a < b)
    raise _EvalError("values are not comparable")


_ORDER_TESTS: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}
_RELATIONS = frozenset({"==", "!=", *_ORDER_TESTS})
_ARITHMETIC = {
    (_TIMESTAMP, "+", _DURATION): _TIMESTAMP,
    (_DURATION, "+", _TIMESTAMP): _TIMESTAMP,
    (_DURATION, "+", _DURATION): _DURATION,
    (_TIMESTAMP, "-", _DURATION): _TIMESTAMP,
    (_TIMESTAMP, "-", _TIMESTAMP): _DURATION,
    (_DURATION, "-", _DURATION): _DURATION,
}
_ATTRIBUTES: dict[str, tuple[str, _Eval]] = {
    "request.time": (_TIMESTAMP, lambda ctx: ctx.request_time),
    "resource.name": (_STRING, lambda ctx: ctx.resource_name),
    "resource.service": (_STRING, lambda ctx: ctx.resource_service),
    "resource.type": (_STRING, lambda ctx: ctx.resource_type),
}
# CEL's accessors: months, days of month and days of year count from 0, getDate from 1.
_ACCESSORS: dict[str, Callable[[datetime], int]] = {
    "getFullYear": lambda t: t.year,
    "getMonth": lambda t: t.month - 1,
    "getDayOfYear": lambda t: t.timetuple().tm_yday - 1,
    "getDayOfMonth": lambda t: t.day - 1,
    "getDate": lambda t: t.day,
    "getDayOfWeek": lambda t: t.isoweekday() % 7,  # 0 = Sunday
    "getHours": lambda t: t.hour,
    "getMinutes": lambda t: t.minute,
    "getSeconds": lambda t: t.second,
    "getMilliseconds": lambda t: t.microsecond // 1000,
}
_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": lambda s, arg: s.startswith(arg),
    "endsWith": lambda s, arg: s.endswith(arg),
    "contains": lambda s, arg: arg in s,
}


def _in_zone(value: object, zone: tzinfo) -> datetime:
    try:
        return _as_time(value).astimezone(zone)
    except (OverflowError, ValueError) as exc:
        raise _EvalError("timestamp out of range in time zone") from exc


def _runtime_zone(name: object) -> tzinfo:
    zone = _zone(_as_str(name))
    if zone is None:
        raise _EvalError("unknown time zone")
    return zone


def _extract(value: str, prefix: str, suffix: str) -> str:
    """IAM ``extract``: the text after the first ``prefix`` up to the next ``suffix``, or ""."""
    start = value.find(prefix)
    if start < 0:
        return ""
    start += len(prefix)
    if not suffix:
        return value[start:]
    end = value.find(suffix, start)
    return "" if end < 0 else value[start:end]


def _length(value: object) -> int:
    if isinstance(value, (str, tuple)):
        return len(value)  # code points for strings, as CEL's size()
    raise _EvalError("size() of unsupported value")


# ---------------------------------------------------------------------------------------------
# Parser: recursive descent over CEL's grammar, type-checking and building closures as it goes.


@dataclass(frozen=True, slots=True)
class _Node:
    type: str
    fn: _Eval
    depth: int
    literal: str | None = None  # value of a string literal, for arguments that must be constant


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "end of expression"
    if token.kind == "string":
        return "string literal"
    return f"'{token.value}'"


class _Parser:
    def __init__(self, src: str) -> None:
        self._src = src
        self._tokens = _tokenize(src)
        self._pos = 0
        self._depth = 0

    def parse(self) -> _Node:
        if self._peek().kind == "eof":
            raise ConditionError("expression is empty")
        node = self._expr()
        token = self._peek()
        if token.kind != "eof":
            raise self._error(token, f"unexpected {_describe(token)} after a complete expression")
        if node.type != _BOOL:
            raise ConditionError(f"condition must evaluate to bool, not {node.type}")
        return node

    # -- token helpers

    def _error(self, token: _Token, message: str) -> ConditionError:
        return _error_at(self._src, token.offset, message)

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._pos + ahead, len(self._tokens) - 1)]

    def _advance(self) -> _Token:
        token = self._peek()
        self._pos += 1
        return token

    def _at(self, op: str, ahead: int = 0) -> bool:
        token = self._peek(ahead)
        return token.kind == "op" and token.value == op

    def _accept(self, op: str) -> _Token | None:
        return self._advance() if self._at(op) else None

    def _expect(self, op: str) -> _Token:
        token = self._peek()
        if not self._at(op):
            raise self._error(token, f"expected '{op}' but found {_describe(token)}")
        return self._advance()

    def _node(self, type_: str, fn: _Eval, at: _Token, *children: _Node) -> _Node:
        depth = 1 + max((child.depth for child in children), default=0)
        if depth > _MAX_DEPTH:
            raise self._error(at, f"expression is nested too deeply (limit {_MAX_DEPTH})")
        return _Node(type_, fn, depth)

    # -- grammar, lowest precedence first

    def _expr(self) -> _Node:
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            raise self._error(self._peek(), f"expression is nested too deeply (limit {_MAX_DEPTH})")
        node = self._logical("||", self._conjunction)
        self._depth -= 1
        return node

    def _conjunction(self) -> _Node:
        return self._logical("&&", self._relation)

    def _logical(self, op: str, operand: Callable[[], _Node]) -> _Node:
        # Flattened into one n-ary node so long chains cost no recursion depth.
        operands, ops = [operand()], []
        while token := self._accept(op):
            ops.append(token)
            operands.append(operand())
        if not ops:
            return operands[0]
        for node, at in zip(operands, [ops[0], *ops], strict=True):
            if node.type != _BOOL:
                raise self._error(at, f"operator '{op}' needs bool operands, not {node.type}")
        combine = _all_of if op == "&&" else _any_of
        return self._node(_BOOL, combine(tuple(n.fn for n in operands)), ops[0], *operands)

    def _relation(self) -> _Node:
        left = self._addition()
        while True:
            token = self._peek()
            is_in = token.kind == "ident" and token.value == "in"
            if not is_in and not (token.kind == "op" and token.value in _RELATIONS):
                return left
            self._advance()
            left = self._comparison(token, left, self._addition())

    def _comparison(self, op: _Token, left: _Node, right: _Node) -> _Node:
        if op.value == "in":
            return self._membership(op, left, right)
        allowed = _EQUATABLE if op.value in ("==", "!=") else _ORDERED
        if left.type != right.type or left.type not in allowed:
            message = f"cannot compare {left.type} with {right.type} using '{op.value}'"
            raise self._error(op, message)
        fn: _Eval
        if op.value == "==":
            fn = _apply2(lambda a, b: a == b, left.fn, right.fn)
        elif op.value == "!=":
            fn = _apply2(lambda a, b: a != b, left.fn, right.fn)
        else:
            test = _ORDER_TESTS[op.value]
            fn = _apply2(lambda a, b: test(_compare(a, b)), left.fn, right.fn)
        return self._node(_BOOL, fn, op, left, right)

    def _membership(self, op: _Token, left: _Node, right: _Node) -> _Node:
        if not right.type.startswith("list<"):
            raise self._error(op, f"right-hand side of 'in' must be a list, not {right.type}")
        element = right.type[len("list<") : -1]
        if element and element != left.type:
            raise self._error(op, f"cannot look for {left.type} in {right.type}")
        fn = _apply2(lambda a, b: a in _as_tuple(b), left.fn, right.fn)
        return self._node(_BOOL, fn, op, left, right)

    def _addition(self) -> _Node:
        left = self._unary()
        while (op := self._accept("+") or self._accept("-")) is not None:
            right = self._unary()
            result = _ARITHMETIC.get((left.type, op.value, right.type))
            if result is None:
                message = f"operator '{op.value}' is not supported for {left.type} and {right.type}"
                raise self._error(op, message)
            arithmetic = _add if op.value == "+" else _subtract
            left = self._node(result, _apply2(arithmetic, left.fn, right.fn), op, left, right)
        return left

    def _unary(self) -> _Node:
        bangs = []
        while bang := self._accept("!"):
            bangs.append(bang)
        node = self._negative_literal() if self._at("-") else self._member(self._primary())
        for bang in reversed(bangs):
            if node.type != _BOOL:
                raise self._error(bang, f"operator '!' needs a bool operand, not {node.type}")
            node = self._node(_BOOL, _apply1(lambda v: not _as_bool(v), node.fn), bang, node)
        return node

    def _negative_literal(self) -> _Node:
        minus = self._advance()
        if self._peek().kind != "int":
            raise self._error(minus, "unary '-' is only supported before an integer literal")
        return self._member(self._int_literal(self._advance(), negative=True))

    def _member(self, node: _Node) -> _Node:
        while True:
            if self._at("["):
                raise self._error(self._peek(), "indexing with '[...]' is not supported")
            if not self._accept("."):
                return node
            name = self._advance()
            if name.kind != "ident":
                raise self._error(name, f"expected a method name, found {_describe(name)}")
            if not self._at("("):
                raise self._error(name, f"field '{name.value}' does not exist on {node.type}")
            node = self._method(node, name, self._arguments())

    def _primary(self) -> _Node:
        token = self._advance()
        if token.kind == "int":
            return self._int_literal(token, negative=False)
        if token.kind == "string":
            return _Node(_STRING, _const(token.value), 1, literal=token.value)
        if token.kind == "ident":
            return self._identifier(token)
        if token.kind == "op" and token.value == "(":
            node = self._expr()
            self._expect(")")
            return node
        if token.kind == "op" and token.value == "[":
            return self._list(token)
        raise self._error(token, f"unexpected {_describe(token)}")

    def _int_literal(self, token: _Token, *, negative: bool) -> _Node:
        digits = token.value.lstrip("0") or "0"
        limit = _INT64_MAX + 1 if negative else _INT64_MAX
        if len(digits) > 19 or int(digits) > limit:  # length check first: int() caps digits
            raise self._error(token, "integer literal is out of the 64-bit range")
        return _Node(_INT, _const(-int(digits) if negative else int(digits)), 1)

    def _list(self, opening: _Token) -> _Node:
        elements: list[_Node] = []
        while not self._at("]"):
            elements.append(self._expr())
            if not self._accept(","):
                break
        self._expect("]")
        types = sorted({element.type for element in elements})
        if len(types) > 1:
            raise self._error(opening, f"list elements must share one type, got {', '.join(types)}")
        element_type = types[0] if types else ""
        if element_type.startswith("list<"):
            raise self._error(opening, "nested lists are not supported")
        fn = _collect(tuple(element.fn for element in elements))
        return self._node(f"list<{element_type}>", fn, opening, *elements)

    def _arguments(self) -> list[_Node]:
        self._expect("(")
        args: list[_Node] = []
        if self._accept(")"):
            return args
        args.append(self._expr())
        while not self._accept(")"):
            if not self._at(","):
                token = self._peek()
                raise self._error(token, f"expected ',' or ')' but found {_describe(token)}")
            self._advance()
            args.append(self._expr())
        return args

    # -- identifiers, functions and methods

    def _identifier(self, token: _Token) -> _Node:
        name = token.value
        if name in ("true", "false"):
            return _Node(_BOOL, _const(name == "true"), 1)
        if name == "null":
            raise self._error(token, "null is not supported")
        if self._at("("):
            return self._function(token, self._arguments())
        if name not in ("request", "resource"):
            raise self._error(token, f"unknown identifier '{name}'")
        path = [name]
        # Collect the dotted attribute path, stopping before a method call such as .size().
        while self._at(".") and self._peek(1).kind == "ident" and not self._at("(", 2):
            self._advance()
            path.append(self._advance().value)
        dotted = ".".join(path)
        if dotted not in _ATTRIBUTES:
            supported = ", ".join(sorted(_ATTRIBUTES))
            raise self._error(token, f"unknown attribute '{dotted}' (supported: {supported})")
        type_, getter = _ATTRIBUTES[dotted]
        return _Node(type_, getter, 1)

    def _arity(self, name: _Token, args: Sequence[_Node], *counts: int) -> None:
        if len(args) not in counts:
            expected = " or ".join(str(count) for count in counts)
            message = f"{name.value}() takes {expected} argument(s), got {len(args)}"
            raise self._error(name, message)

    def _literal_arg(self, name: _Token, arg: _Node) -> str:
        if arg.literal is None:
            raise self._error(name, f"{name.value}() needs a string literal argument")
        return arg.literal

    def _function(self, name: _Token, args: list[_Node]) -> _Node:
        if name.value == "size":
            self._arity(name, args, 1)
            return self._size(name, args[0])
        if name.value not in ("timestamp", "duration"):
            raise self._error(name, f"unknown function '{name.value}'")
        self._arity(name, args, 1)
        text = self._literal_arg(name, args[0])
        try:
            if name.value == "timestamp":
                return _Node(_TIMESTAMP, _const(_parse_timestamp(text)), 1)
            return _Node(_DURATION, _const(_parse_duration(text)), 1)
        except ValueError as exc:
            raise self._error(name, str(exc)) from None

    def _size(self, name: _Token, arg: _Node) -> _Node:
        if arg.type != _STRING and not arg.type.startswith("list<"):
            raise self._error(name, f"size() is not supported on {arg.type}")
        return self._node(_INT, _apply1(_length, arg.fn), name, arg)

    def _method(self, receiver: _Node, name: _Token, args: list[_Node]) -> _Node:
        if name.value == "size":
            self._arity(name, args, 0)
            return self._size(name, receiver)
        if name.value in _ACCESSORS:
            return self._accessor(receiver, name, args)
        if name.value not in ("matches", "extract", *_STRING_TESTS):
            raise self._error(name, f"unknown method '{name.value}'")
        if receiver.type != _STRING:
            raise self._error(name, f"method '{name.value}' is not supported on {receiver.type}")
        self._arity(name, args, 1)
        if args[0].type != _STRING:
            raise self._error(name, f"{name.value}() needs a string argument, not {args[0].type}")
        if name.value == "matches":
            return self._matches(receiver, name, args[0])
        if name.value == "extract":
            return self._extract(receiver, name, args[0])
        test = _STRING_TESTS[name.value]
        fn = _apply2(lambda s, arg: test(_as_str(s), _as_str(arg)), receiver.fn, args[0].fn)
        return self._node(_BOOL, fn, name, receiver, args[0])

    def _matches(self, receiver: _Node, name: _Token, arg: _Node) -> _Node:
        # A constant pattern is validated now; dynamic patterns could be invalid or hostile.
        try:
            regex = _compile_regex(self._literal_arg(name, arg))
        except ValueError as exc:
            raise self._error(name, str(exc)) from None
        fn = _apply1(lambda s: regex.search(_as_str(s)) is not None, receiver.fn)
        return self._node(_BOOL, fn, name, receiver)

    def _extract(self, receiver: _Node, name: _Token, arg: _Node) -> _Node:
        try:
            prefix, suffix = _extract_template(self._literal_arg(name, arg))
        except ValueError as exc:
            raise self._error(name, str(exc)) from None
        fn = _apply1(lambda s: _extract(_as_str(s), prefix, suffix), receiver.fn)
        return self._node(_STRING, fn, name, receiver)

    def _accessor(self, receiver: _Node, name: _Token, args: list[_Node]) -> _Node:
        if receiver.type != _TIMESTAMP:
            raise self._error(name, f"method '{name.value}' is not supported on {receiver.type}")
        self._arity(name, args, 0, 1)
        get = _ACCESSORS[name.value]
        if not args:
            fn = _apply1(lambda t: get(_in_zone(t, UTC)), receiver.fn)
            return self._node(_INT, fn, name, receiver)
        zone_arg = args[0]
        if zone_arg.type != _STRING:
            raise self._error(name, f"time zone must be a string, not {zone_arg.type}")
        if zone_arg.literal is None:  # dynamic zone: an unknown name is a runtime error
            fn = _apply2(lambda t, z: get(_in_zone(t, _runtime_zone(z))), receiver.fn, zone_arg.fn)
            return self._node(_INT, fn, name, receiver, zone_arg)
        zone = _zone(zone_arg.literal)
        if zone is None:
            raise self._error(name, f"unknown time zone '{zone_arg.literal}'")
        fixed_zone: tzinfo = zone
        fn = _apply1(lambda t: get(_in_zone(t, fixed_zone)), receiver.fn)
        return self._node(_INT, fn, name, receiver)
