"""Operator commands on the store: ``tokensmith audit`` and ``tokensmith keys rotate``."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from tests.conftest import Api
from tokensmith.cli import operator
from tokensmith.clock import FixedClock
from tokensmith.main import Services


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("tokensmith")
    operator.register(group)
    return group


def test_audit_filters_and_formats(cli: click.Group, owner: Api, services: Services) -> None:
    """audit lists denials with principal, permission and resource, filtered as asked."""
    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "audited"})
    email = "audited@tokensmith-local.iam.gserviceaccount.com"
    denied = owner.post(
        f"/v1/projects/-/serviceAccounts/{email}:generateIdToken", json={"audience": "a"}
    )
    assert denied.status_code == 403
    data_dir = str(services.settings.data_dir)
    result = CliRunner().invoke(
        cli, ["audit", "--data-dir", data_dir, "--outcome", "denied", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[0]["method"] == "generateIdToken"
    assert lines[0]["principal"] == "user:owner@tokensmith.local"
    assert lines[0]["permission"] == "iam.serviceAccounts.getOpenIdToken"
    assert lines[0]["resource"].endswith(email)
    by_account = CliRunner().invoke(cli, ["audit", "--data-dir", data_dir, "--account", email])
    assert "CreateServiceAccount" in by_account.output
    assert "generateIdToken" in by_account.output
    by_principal = CliRunner().invoke(
        cli, ["audit", "--data-dir", data_dir, "--principal", "nobody@example.com"]
    )
    assert by_principal.output == ""


def test_audit_rejects_bad_times(cli: click.Group, services: Services) -> None:
    """A --since that is neither a timestamp nor relative is a usage error."""
    result = CliRunner().invoke(
        cli, ["audit", "--data-dir", str(services.settings.data_dir), "--since", "yesterday"]
    )
    assert result.exit_code == 2
    assert "neither a timestamp" in result.output


def test_parse_when_relative_and_absolute() -> None:
    """Relative times count back from now; ISO times may omit the zone (UTC)."""
    assert operator.parse_when("-2h", 10_000.0) == 10_000.0 - 7200
    assert operator.parse_when("30m", 10_000.0) == 10_000.0 - 1800
    assert operator.parse_when("1970-01-01T01:00:00Z", 0.0) == 3600.0
    assert operator.parse_when("1970-01-01T01:00:00", 0.0) == 3600.0


def test_keys_rotate_publishes_a_new_issuer_key(
    cli: click.Group, services: Services, clock: FixedClock
) -> None:
    """keys rotate adds a published issuer key that is not yet signing."""
    before = {k.key_id for k in services.store.list_signing_keys("issuer")}
    result = CliRunner().invoke(
        cli,
        obj={"clock": clock},
        args=["keys", "rotate", "--data-dir", str(services.settings.data_dir)],
    )
    assert result.exit_code == 0, result.output
    after = {k.key_id for k in services.store.list_signing_keys("issuer")}
    (new,) = after - before
    assert new in result.output
    services.keyring.refresh()
    assert services.keyring.signer().key_id != new
    again = CliRunner().invoke(
        cli,
        obj={"clock": clock},
        args=["keys", "rotate", "--data-dir", str(services.settings.data_dir)],
    )
    assert "nothing to do" in again.output


def test_keys_rotate_for_an_account(
    cli: click.Group, owner: Api, services: Services, clock: FixedClock
) -> None:
    """keys rotate --account rotates that account's system-managed keys."""
    owner.post("/v1/projects/tokensmith-local/serviceAccounts", json={"accountId": "rotated"})
    email = "rotated@tokensmith-local.iam.gserviceaccount.com"
    account = services.directory.by_email(email)
    assert account is not None
    first = services.account_keys.signer(account).key_id
    result = CliRunner().invoke(
        cli,
        obj={"clock": clock},
        args=["keys", "rotate", "--data-dir", str(services.settings.data_dir), "--account", email],
    )
    assert result.exit_code == 0, result.output
    keys = {k.key_id for k in services.store.list_signing_keys(f"sa:{account.unique_id}")}
    assert len(keys) == 2
    assert first in keys
    missing = CliRunner().invoke(
        cli,
        obj={"clock": clock},
        args=[
            "keys",
            "rotate",
            "--data-dir",
            str(services.settings.data_dir),
            "--account",
            "x@y.z",
        ],
    )
    assert missing.exit_code == 1
