"""The metadata server inside `tokensmith serve`: bootstrap, settings, the agent's grants."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.api.test_iamcredentials import create_account
from tests.conftest import Api
from tests.metadata.conftest import PROJECT, TOKEN_CREATOR, email
from tokensmith.clock import FixedClock
from tokensmith.config import Settings
from tokensmith.main import Services, build
from tokensmith.metadata.embedded import embedded_servers, instance_specs
from tokensmith.metadata.instance import ConfigError, make_spec
from tokensmith.services.bootstrap import compute_default_account, compute_service_agent
from tokensmith.testing import free_port


def policy_of(owner: Api, account_email: str) -> dict[str, list[str]]:
    response = owner.post(f"/v1/projects/-/serviceAccounts/{account_email}:getIamPolicy", json={})
    assert response.status_code == 200, response.text
    return {b["role"]: b["members"] for b in response.json().get("bindings", [])}


def test_bootstrap_creates_the_default_compute_account(owner: Api, services: Services) -> None:
    """The project has PROJECT_NUMBER-compute@developer.gserviceaccount.com, shown as such."""
    number = services.project.project_number
    default = compute_default_account(number)
    response = owner.get(f"/v1/projects/-/serviceAccounts/{default}")
    assert response.status_code == 200, response.text
    account = response.json()
    assert account["email"] == f"{number}-compute@developer.gserviceaccount.com"
    assert account["displayName"] == "Compute Engine default service account"
    assert account["projectId"] == PROJECT
    assert len(account["uniqueId"]) == 21
    listed = owner.get(f"/v1/projects/{PROJECT}/serviceAccounts").json()["accounts"]
    assert default in [a["email"] for a in listed]


def test_compute_service_agent_holds_token_creator_on_it(owner: Api, services: Services) -> None:
    """The Compute Engine service agent is TokenCreator on the default compute account."""
    number = services.project.project_number
    policy = policy_of(owner, compute_default_account(number))
    assert policy == {TOKEN_CREATOR: [compute_service_agent(number).member]}
    assert compute_service_agent(number).member == (
        f"serviceAccount:service-{number}@compute-system.iam.gserviceaccount.com"
    )


def test_bootstrap_is_idempotent_and_respects_policy_edits(
    http: TestClient, owner: Api, services: Services, settings: Settings, clock: FixedClock
) -> None:
    """A restart keeps the account (same unique id) and an operator's edit of its policy."""
    default = compute_default_account(services.project.project_number)
    before = owner.get(f"/v1/projects/-/serviceAccounts/{default}").json()
    policy = owner.post(f"/v1/projects/-/serviceAccounts/{default}:getIamPolicy", json={}).json()
    policy["bindings"] = []
    edited = owner.post(
        f"/v1/projects/-/serviceAccounts/{default}:setIamPolicy", json={"policy": policy}
    )
    assert edited.status_code == 200, edited.text
    again = build(settings, clock)
    try:
        record = again.directory.by_email(default)
        assert record is not None
        assert record.unique_id == before["uniqueId"]
        assert policy_of(owner, default) == {}
    finally:
        again.close()


def test_non_default_attached_account_gets_the_agent_grant_at_start(
    owner: Api, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """serve grants the agent TokenCreator on a non-default attached account, and logs it."""
    create_account(owner, "web-runtime")
    spec = make_spec(port=free_port(), service_account=email("web-runtime"))
    with caplog.at_level(logging.INFO, logger="tokensmith"):
        embedded_servers(services, [spec])
    agent = compute_service_agent(services.project.project_number).member
    assert agent in policy_of(owner, email("web-runtime"))[TOKEN_CREATOR]
    assert any(
        "granted" in r.getMessage() and email("web-runtime") in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tokensmith"):
        embedded_servers(services, [spec])
    assert not any("granted" in r.getMessage() for r in caplog.records)


def test_missing_attached_account_is_reported(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """An attached account that does not exist yet is a warning that says what to do."""
    spec = make_spec(port=free_port(), service_account=email("not-yet"))
    with caplog.at_level(logging.WARNING, logger="tokensmith"):
        embedded_servers(services, [spec])
    (warning,) = [r.getMessage() for r in caplog.records if "not-yet" in r.getMessage()]
    assert "does not exist" in warning
    assert "roles/iam.serviceAccountTokenCreator" in warning


def test_instance_specs_combine_the_flag_and_the_file(tmp_path: Path) -> None:
    """--metadata-config instances come first; --metadata-port adds one more after them."""
    config = tmp_path / "md.json"
    config.write_text(json.dumps({"instances": [{"port": 9101}, {"port": 9102}]}))
    specs = instance_specs(
        Settings(
            data_dir=tmp_path,
            metadata_config=str(config),
            metadata_port=9103,
            metadata_service_account="x@tokensmith-local.iam.gserviceaccount.com",
        )
    )
    assert [(s.port, s.name, s.service_account) for s in specs] == [
        (9101, "instance-1", ""),
        (9102, "instance-2", ""),
        (9103, "instance-3", "x@tokensmith-local.iam.gserviceaccount.com"),
    ]
    assert instance_specs(Settings(data_dir=tmp_path)) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metadata_port": 8080, "port": 8080}, "cannot share the API's port"),
        ({"metadata_service_account": "a@b.iam.gserviceaccount.com"}, "needs --metadata-port"),
        ({"metadata_port": 9101, "metadata_config": "CONFIG"}, "two instances listen on"),
    ],
)
def test_unusable_metadata_settings_are_refused(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    """A metadata port equal to the API's, an account without a port, or a clash: ConfigError."""
    config = tmp_path / "md.json"
    config.write_text(json.dumps([{"port": 9101}]))
    values = {k: (str(config) if v == "CONFIG" else v) for k, v in fields.items()}
    with pytest.raises(ConfigError, match=message):
        instance_specs(Settings(data_dir=tmp_path, **values))  # type: ignore[arg-type]
