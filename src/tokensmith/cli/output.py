"""How administrative commands print: aligned tables and ``key: value`` text for people,
the API's own JSON for programs (``--format json``), and usage mistakes as one ``error:``
line (exit 2) instead of click's usage block.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

import click

__all__ = [
    "OneLineCommand",
    "OneLineGroup",
    "UsageProblem",
    "accounts_table",
    "describe",
    "dumps",
    "keys_table",
    "org_policy_text",
    "policy_text",
    "table",
]

# one-line usage errors ------------------------------------------------------------------------


class UsageProblem(click.UsageError):
    """A usage error shown as one ``error:`` line (exit 2) instead of click's usage block."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" Try '{self.ctx.command_path} --help'." if self.ctx is not None else ""
        click.echo(f"error: {self.format_message()}{hint}", file=file, err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    # A group called without a subcommand shows its help; that is not a mistake to reword.
    if isinstance(exc, UsageProblem | click.exceptions.NoArgsIsHelpError):
        return exc
    return UsageProblem(exc.format_message(), exc.ctx)


class OneLineCommand(click.Command):
    """A command whose argument mistakes are reported as one ``error:`` line."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None


class OneLineGroup(click.Group):
    """A group whose mistakes (and whose commands' mistakes) are one ``error:`` line."""

    command_class = OneLineCommand

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc) from None


# text for people ------------------------------------------------------------------------------


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _yes(value: object) -> str:
    return "yes" if value else "no"


def accounts_table(accounts: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            a.get("email", ""),
            a.get("uniqueId", ""),
            _yes(a.get("disabled")),
            a.get("displayName", ""),
        ]
        for a in accounts
    ]
    return table(["EMAIL", "UNIQUE_ID", "DISABLED", "DISPLAY_NAME"], rows)


def keys_table(keys: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            str(k.get("name", "")).rpartition("/")[2],
            k.get("keyType", ""),
            k.get("validAfterTime", ""),
            k.get("validBeforeTime", ""),
            _yes(k.get("disabled")),
        ]
        for k in keys
    ]
    return table(["KEY_ID", "TYPE", "CREATED", "EXPIRES", "DISABLED"], rows)


def describe(data: Mapping[str, Any], indent: str = "") -> str:
    """A nested mapping as ``key: value`` lines (lists one item a line), the way gcloud shows."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"{indent}{key}:")
            lines.append(describe(value, indent + "  "))
        elif isinstance(value, list):
            lines.append(f"{indent}{key}:")
            for item in value:
                if isinstance(item, Mapping):
                    nested = describe(item, indent + "    ").splitlines()
                    lines.append(f"{indent}  - {nested[0].lstrip()}")
                    lines.extend(nested[1:])
                else:
                    lines.append(f"{indent}  - {_scalar(item)}")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def policy_text(resource: str, policy: Mapping[str, Any]) -> str:
    """An IAM policy as role → members, conditions spelled out."""
    lines = [f"IAM policy of {resource} (version {policy.get('version', 1)}):"]
    bindings = policy.get("bindings") or []
    if not bindings:
        lines.append("  (no bindings)")
    for binding in bindings:
        role = str(binding.get("role", ""))
        condition = binding.get("condition")
        if condition:
            role += f"  if {condition.get('title', '')!r}: {condition.get('expression', '')}"
        lines.append(f"  {role}")
        lines.extend(f"    {member}" for member in binding.get("members", []))
    lines.append(f"etag: {policy.get('etag', '')}")
    return "\n".join(lines)


def org_policy_text(constraint: str, project: str, policy: Mapping[str, Any]) -> str:
    """A list constraint's policy on a project: which values are allowed or denied."""
    listed = policy.get("listPolicy")
    head = f"{constraint} on project {project}:"
    if not listed:
        return f"{head} not set (access tokens live at most 1 hour)"
    lines = [head]
    if listed.get("allValues"):
        lines.append(f"  all values: {listed['allValues']}")
    for field, label in (("allowedValues", "allowed"), ("deniedValues", "denied")):
        if listed.get(field):
            lines.append(f"  {label}: {', '.join(listed[field])}")
    if len(lines) == 1:
        lines.append("  no account listed (access tokens live at most 1 hour)")
    return "\n".join(lines)
