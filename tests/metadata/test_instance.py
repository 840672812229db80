"""Metadata instances: settings files (JSON, TOML), validation, and resolution of facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokensmith.metadata.instance import (
    DEFAULT_SCOPES,
    ConfigError,
    load_instances,
    make_spec,
    parse_instances,
)

TOML = """
[project_attributes]
env = "dev"

[[instances]]
port = 8081
name = "web-1"
zone = "europe-west1-b"
service_account = "web@my-project.iam.gserviceaccount.com"
tags = ["http-server"]
[instances.attributes]
role = "frontend"

[[instances]]
port = 8082
scopes = ["https://www.googleapis.com/auth/iam"]
[instances.project_attributes]
env = "staging"
"""


def test_toml_file_lists_instances_with_shared_project_attributes(tmp_path: Path) -> None:
    """A TOML file gives each instance its fields; project attributes apply to every one."""
    path = tmp_path / "metadata.toml"
    path.write_text(TOML)
    web, second = load_instances(path)
    assert (web.port, web.name, web.zone) == (8081, "web-1", "europe-west1-b")
    assert web.service_account == "web@my-project.iam.gserviceaccount.com"
    assert web.tags == ("http-server",)
    assert web.attributes == {"role": "frontend"}
    assert web.project_attributes == {"env": "dev"}
    assert web.scopes == DEFAULT_SCOPES
    assert second.name == "instance-2"
    assert second.service_account == ""
    assert second.scopes == ("https://www.googleapis.com/auth/iam",)
    assert second.project_attributes == {"env": "staging"}


def test_json_file_may_be_a_bare_list(tmp_path: Path) -> None:
    """A JSON settings file may be the list of instances itself."""
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps([{"port": 9001, "licenses": ["1000010"], "id": 1234}]))
    (spec,) = load_instances(path)
    assert spec.port == 9001
    assert spec.licenses == ("1000010",)
    assert spec.instance_id == "1234"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"instances": [{"port": 1, "portt": 2}]}, "unknown key 'portt'"),
        ({"instance": []}, "unknown key 'instance'"),
        ({"instances": []}, "non-empty list"),
        ([{"port": 0}], "'port' must be a port number"),
        ([{"port": "80"}], "'port' must be a port number"),
        ([{"port": 80, "name": "Web_1"}], "Compute Engine instance name"),
        ([{"port": 80, "zone": "mars"}], "not a zone"),
        ([{"port": 80, "service_account": "nobody"}], "must be an email"),
        ([{"port": 80, "scopes": []}], "scopes must not be empty"),
        ([{"port": 80, "tags": "web"}], "list of non-empty strings"),
        ([{"port": 80, "attributes": {"k": 1}}], "must be a string"),
        ([{"port": 80, "attributes": {"bad key": "v"}}], "letters, digits"),
        ([{"port": 80, "id": "i-123"}], "numeric instance id"),
        ([{"port": 80}, {"port": 80}], "two instances listen on 127.0.0.1:80"),
        ([{"port": 80, "name": "a"}, {"port": 81, "name": "a"}], "two instances are named 'a'"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(document: Any, message: str) -> None:
    """Each mistake in a settings file is a ConfigError that says what is wrong."""
    with pytest.raises(ConfigError, match=message):
        parse_instances(document)


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file or invalid JSON/TOML is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_instances(tmp_path / "absent.json")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[instances]\nport = ")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid"):
        load_instances(bad)


def test_resolution_derives_a_stable_id_hostname_and_default_account() -> None:
    """An instance resolves to a stable 19-digit id, GCE's internal hostname and the default SA."""
    spec = make_spec(port=8081, name="web-1", zone="europe-west1-b")
    facts = {
        "project_id": "my-project",
        "project_number": "123456789012",
        "default_account": "123456789012-compute@developer.gserviceaccount.com",
        "created_at": 1_800_000_000.5,
    }
    first, again = spec.resolve(**facts), spec.resolve(**facts)
    assert first.instance_id == again.instance_id
    assert len(first.instance_id) == 19
    assert first.instance_id.isdigit()
    assert first.hostname == "web-1.europe-west1-b.c.my-project.internal"
    assert first.service_account == "123456789012-compute@developer.gserviceaccount.com"
    other = make_spec(port=8082, name="web-2", zone="europe-west1-b").resolve(**facts)
    assert other.instance_id != first.instance_id


def test_compute_engine_claims_carry_licenses_only_when_asked() -> None:
    """google.compute_engine has the instance facts; license_id only with licenses=TRUE."""
    spec = make_spec(port=8081, name="vm", licenses=["1000010"], id="77")
    instance = spec.resolve(
        project_id="p-roject",
        project_number="42",
        default_account="42-compute@developer.gserviceaccount.com",
        created_at=1_700_000_000.9,
    )
    assert instance.compute_engine_claims(licenses=False) == {
        "instance_creation_timestamp": 1_700_000_000,
        "instance_id": "77",
        "instance_name": "vm",
        "project_id": "p-roject",
        "project_number": 42,
        "zone": "us-central1-a",
    }
    assert instance.compute_engine_claims(licenses=True)["license_id"] == ["1000010"]
