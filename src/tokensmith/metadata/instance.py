"""The instances a metadata server speaks for: what a Compute Engine VM knows about itself.

An ``InstanceSpec`` is what an operator writes (flags, or an entry of a ``--metadata-config``
file); ``InstanceSpec.resolve`` fills in what the project decides (project id and number, the
default compute account, a stable numeric instance id, the internal hostname) and gives the
``Instance`` the metadata paths serve. https://cloud.google.com/compute/docs/metadata/predefined-metadata-keys

A settings file is JSON or TOML (chosen by its suffix; anything but ``.toml`` is JSON)::

    # metadata.toml
    [project_attributes]
    env = "dev"

    [[instances]]
    port = 8081
    name = "web-1"
    zone = "europe-west1-b"
    service_account = "web@my-project.iam.gserviceaccount.com"
    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    tags = ["http-server"]
    [instances.attributes]
    role = "frontend"

In JSON the same is ``{"project_attributes": {...}, "instances": [{...}]}``, or just the list.
Unknown keys are refused, so that a misspelt one is noticed rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SCOPES",
    "ConfigError",
    "Instance",
    "InstanceSpec",
    "check_unique",
    "load_instances",
    "make_spec",
    "parse_instances",
]

DEFAULT_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
)
DEFAULT_ZONE = "us-central1-a"
DEFAULT_MACHINE_TYPE = "e2-standard-2"

_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_INSTANCE_KEYS = {
    "port",
    "host",
    "service_account",
    "name",
    "zone",
    "id",
    "hostname",
    "machine_type",
    "tags",
    "attributes",
    "project_attributes",
    "scopes",
    "licenses",
}


class ConfigError(ValueError):
    """A metadata settings file or flag that cannot be used; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
    """One metadata listener as configured; empty strings mean "derive it"."""

    port: int
    host: str = "127.0.0.1"
    service_account: str = ""  # empty: the project's default compute account
    name: str = "instance-1"
    zone: str = DEFAULT_ZONE
    instance_id: str = ""
    hostname: str = ""
    machine_type: str = DEFAULT_MACHINE_TYPE
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    project_attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    licenses: tuple[str, ...] = ()

    def resolve(
        self,
        *,
        project_id: str,
        project_number: str,
        default_account: str,
        created_at: float,
    ) -> Instance:
        instance_id = self.instance_id or _derived_id(project_number, self.zone, self.name)
        return Instance(
            spec=self,
            project_id=project_id,
            project_number=project_number,
            service_account=(self.service_account or default_account).lower(),
            instance_id=instance_id,
            hostname=self.hostname or f"{self.name}.{self.zone}.c.{project_id}.internal",
            created_at=int(created_at),
        )


@dataclasses.dataclass(frozen=True)
class Instance:
    """A resolved instance: every fact the metadata server answers with."""

    spec: InstanceSpec
    project_id: str
    project_number: str
    service_account: str
    instance_id: str
    hostname: str
    created_at: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def zone(self) -> str:
        return self.spec.zone

    @property
    def url(self) -> str:
        host = self.spec.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - describing a bind address, not binding
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.spec.port}"

    def compute_engine_claims(self, *, licenses: bool) -> dict[str, Any]:
        """The ``google.compute_engine`` object of a ``format=full`` ID token (COMPAT B.2)."""
        claims: dict[str, Any] = {
            "instance_creation_timestamp": self.created_at,
            "instance_id": self.instance_id,
            "instance_name": self.name,
            "project_id": self.project_id,
            "project_number": int(self.project_number),
            "zone": self.zone,
        }
        if licenses:
            claims["license_id"] = list(self.spec.licenses)
        return claims


def _derived_id(project_number: str, zone: str, name: str) -> str:
    """A stable 19-digit instance id: the same instance keeps its id across restarts."""
    digest = int(hashlib.sha256(f"{project_number}/{zone}/{name}".encode()).hexdigest(), 16)
    return str(10**18 + digest % (9 * 10**18))


# parsing --------------------------------------------------------------------------------------


def load_instances(path: str | Path) -> list[InstanceSpec]:
    """The instances a settings file lists (JSON, or TOML for a ``.toml`` file)."""
    where = f"metadata config {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        if str(path).endswith(".toml"):
            document: Any = tomllib.loads(text)
        else:
            document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} is not valid: {exc}") from None
    return parse_instances(document, where=where)


def parse_instances(document: object, *, where: str = "metadata config") -> list[InstanceSpec]:
    """Instances from a parsed settings document; ports and names must be unique."""
    project_attributes: Mapping[str, str] = {}
    if isinstance(document, dict):
        unknown = set(document) - {"instances", "project_attributes"}
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {sorted(unknown)[0]!r} "
                "(expected 'instances' and 'project_attributes')"
            )
        project_attributes = _attributes(
            document.get("project_attributes", {}), f"{where}: project_attributes"
        )
        document = document.get("instances")
    if not isinstance(document, list) or not document:
        raise ConfigError(f"{where}: 'instances' must be a non-empty list of instances")
    specs = [
        _instance(entry, f"{where}: instances[{index}]", project_attributes, index)
        for index, entry in enumerate(document)
    ]
    check_unique(specs, where)
    return specs


def check_unique(specs: Sequence[InstanceSpec], where: str = "metadata config") -> None:
    """Refuse two instances on one port, or two with one name."""
    ports: set[tuple[str, int]] = set()
    names: set[str] = set()
    for spec in specs:
        if (spec.host, spec.port) in ports:
            raise ConfigError(f"{where}: two instances listen on {spec.host}:{spec.port}")
        if spec.name in names:
            raise ConfigError(f"{where}: two instances are named {spec.name!r}")
        ports.add((spec.host, spec.port))
        names.add(spec.name)


def make_spec(**fields: Any) -> InstanceSpec:
    """An ``InstanceSpec`` from keyword fields, validated as a settings-file entry would be."""
    return _instance(fields, "metadata instance", {}, 0)


def _instance(
    raw: object, where: str, project_attributes: Mapping[str, str], index: int
) -> InstanceSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = set(raw) - _INSTANCE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{where}: 'port' must be a port number (1-65535)")
    values: dict[str, Any] = {"port": port, "name": f"instance-{index + 1}"}
    for key in ("host", "service_account", "name", "zone", "hostname", "machine_type"):
        if key in raw:
            values[key] = _string(raw[key], f"{where}: {key}")
    if "id" in raw:
        instance_id = str(raw["id"]) if isinstance(raw["id"], int) else raw["id"]
        if not isinstance(instance_id, str) or not instance_id.isdigit():
            raise ConfigError(f"{where}: 'id' must be a numeric instance id")
        values["instance_id"] = instance_id
    if not _NAME.match(values["name"]):
        raise ConfigError(
            f"{where}: name {values['name']!r} must be 1-63 lowercase letters, digits or "
            "hyphens, starting with a letter (a Compute Engine instance name)"
        )
    if "zone" in values and not _ZONE.match(values["zone"]):
        raise ConfigError(f"{where}: zone {values['zone']!r} is not a zone like 'us-central1-a'")
    if "service_account" in values and "@" not in values["service_account"]:
        raise ConfigError(f"{where}: service_account must be an email (or absent for the default)")
    for key in ("tags", "scopes", "licenses"):
        if key in raw:
            values[key] = _strings(raw[key], f"{where}: {key}")
    if "scopes" in values and not values["scopes"]:
        raise ConfigError(f"{where}: scopes must not be empty")
    values["attributes"] = _attributes(raw.get("attributes", {}), f"{where}: attributes")
    values["project_attributes"] = {
        **project_attributes,
        **_attributes(raw.get("project_attributes", {}), f"{where}: project_attributes"),
    }
    return InstanceSpec(**values)


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value.strip()


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    return tuple(dict.fromkeys(v.strip() for v in value))


def _attributes(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object of string values")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ConfigError(
                f"{where}: key {str(key)[:60]!r} must be 1-128 letters, digits, '-' or '_'"
            )
        if not isinstance(item, str):
            raise ConfigError(f"{where}: the value of {key!r} must be a string")
        out[key] = item
    return out
