"""The metadata tree of one instance, and its renderings; pure functions, no I/O.

https://cloud.google.com/compute/docs/metadata/querying-metadata — a directory lists its
children one per line (directories with a trailing ``/``); ``?recursive=true`` gives the subtree
as JSON with camelCase keys (``machine-type`` → ``machineType``; attribute keys and account
emails are data and keep their spelling) and without the ``token`` and ``identity`` endpoints;
``alt=text`` on a subtree flattens it to ``path value`` lines. The ETag of an answer is a hash of
its content, so it changes exactly when the value does (what ``wait_for_change`` watches).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from tokensmith.metadata.instance import Instance

__all__ = [
    "UNIVERSE_DOMAIN",
    "Directory",
    "Endpoint",
    "Leaf",
    "Node",
    "build_tree",
    "etag_of",
    "flatten",
    "leaf_text",
    "listing",
    "lookup",
    "to_json",
]

UNIVERSE_DOMAIN = "googleapis.com"


@dataclasses.dataclass(frozen=True)
class Leaf:
    """A value: a string or number (text), a list (one item per line), or JSON by default."""

    value: Any
    json_by_default: bool = False


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A computed value: ``token`` or ``identity`` of a service account."""

    kind: str


@dataclasses.dataclass(frozen=True)
class Directory:
    children: Mapping[str, Node]
    camel: bool = True  # camelCase the children's names in recursive JSON

    def get(self, name: str) -> Node | None:
        return self.children.get(name)


Node = Leaf | Endpoint | Directory


def _data(values: Mapping[str, str]) -> Directory:
    return Directory({k: Leaf(v) for k, v in sorted(values.items())}, camel=False)


def _account(instance: Instance) -> Directory:
    return Directory(
        {
            "aliases": Leaf(["default"]),
            "email": Leaf(instance.service_account),
            "identity": Endpoint("identity"),
            "scopes": Leaf(list(instance.spec.scopes)),
            "token": Endpoint("token"),
        }
    )


def build_tree(instance: Instance) -> Directory:
    """The whole tree from ``/``: ``computeMetadata/v1/{instance,project,universe}/…``."""
    spec = instance.spec
    account = _account(instance)
    number = instance.project_number
    v1 = Directory(
        {
            "instance": Directory(
                {
                    "attributes": _data(spec.attributes),
                    "hostname": Leaf(instance.hostname),
                    "id": Leaf(int(instance.instance_id)),
                    "machine-type": Leaf(f"projects/{number}/machineTypes/{spec.machine_type}"),
                    "name": Leaf(instance.name),
                    "service-accounts": Directory(
                        {"default": account, instance.service_account: account}, camel=False
                    ),
                    "tags": Leaf(list(spec.tags), json_by_default=True),
                    "zone": Leaf(f"projects/{number}/zones/{instance.zone}"),
                }
            ),
            "project": Directory(
                {
                    "attributes": _data(spec.project_attributes),
                    "numeric-project-id": Leaf(int(number)),
                    "project-id": Leaf(instance.project_id),
                }
            ),
            "universe": Directory({"universe-domain": Leaf(UNIVERSE_DOMAIN)}),
        }
    )
    return Directory({"computeMetadata": Directory({"v1": v1})})


def lookup(root: Directory, path: str) -> Node | None:
    """The node at ``path`` (``/a/b`` or ``/a/b/``), or None; empty segments match nothing."""
    inner = path.strip("/")
    node: Node = root
    if not inner:
        return node
    for segment in inner.split("/"):
        if not isinstance(node, Directory):
            return None
        child = node.get(segment)
        if child is None:
            return None
        node = child
    return node


def listing(directory: Directory) -> list[str]:
    """The children's names, directories with a trailing ``/``."""
    return [
        f"{name}/" if isinstance(child, Directory) else name
        for name, child in directory.children.items()
    ]


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_json(node: Node) -> Any:
    """The recursive JSON value of a node (endpoints left out)."""
    if isinstance(node, Leaf):
        return node.value
    if isinstance(node, Endpoint):
        return None
    return {
        (_camel(name) if node.camel else name): to_json(child)
        for name, child in node.children.items()
        if not isinstance(child, Endpoint)
    }


def leaf_text(leaf: Leaf) -> str:
    """A leaf as ``alt=text`` shows it: lists one item per line, objects as JSON."""
    value = leaf.value
    if isinstance(value, list):
        return "".join(f"{item}\n" for item in value)
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def flatten(node: Node, prefix: str = "") -> list[str]:
    """``recursive=true&alt=text``: one ``path value`` line per value (lists: one per item)."""
    if isinstance(node, Endpoint):
        return []
    if isinstance(node, Leaf):
        items = node.value if isinstance(node.value, list) else [node.value]
        key = prefix or ""
        return [f"{key} {item}".lstrip() for item in items]
    lines: list[str] = []
    for name, child in node.children.items():
        lines.extend(flatten(child, f"{prefix}/{name}" if prefix else name))
    return lines


def etag_of(body: bytes) -> str:
    """A content ETag: 16 hex digits of the body's SHA-256."""
    return hashlib.sha256(body).hexdigest()[:16]
