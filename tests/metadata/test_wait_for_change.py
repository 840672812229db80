"""Hanging GETs: wait_for_change with last_etag and timeout_sec (real time, kept under 2 s)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.metadata.conftest import V1, Metadata, metadata_for
from tokensmith.clock import FixedClock
from tokensmith.main import Services
from tokensmith.metadata.embedded import embedded_servers
from tokensmith.metadata.instance import ConfigError, make_spec
from tokensmith.metadata.server import MetadataServer
from tokensmith.metadata.sources import MetadataError, Minted
from tokensmith.testing import free_port

ROLE = f"{V1}/instance/attributes/role"


@pytest.fixture
def md(services: Services, clock: FixedClock) -> Iterator[Metadata]:
    metadata = metadata_for(
        services, clock, make_spec(port=free_port(), attributes={"role": "web"})
    )
    with metadata.client:
        yield metadata


class NoTokens:
    """A token source for tests that never mint."""

    def access_token(self, scopes: tuple[str, ...]) -> Minted:
        raise MetadataError(403, "no tokens here")

    def id_token(self, audience: str, *, full: bool, licenses: bool) -> Minted:
        raise MetadataError(403, "no tokens here")

    def close(self) -> None:
        """Nothing to release."""


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def until(condition: Callable[[], bool], limit: float = 2.0) -> None:
    """Wait for another thread to reach a state (synchronisation, not passing time)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def set_role(md: Metadata, role: str) -> None:
    spec = md.server.instance.spec
    md.server.update(dataclasses.replace(spec, attributes={**spec.attributes, "role": role}))


def test_stale_last_etag_returns_at_once(md: Metadata) -> None:
    """last_etag different from the current ETag answers immediately with the value."""
    started = time.monotonic()
    response = md.get(ROLE, wait_for_change="true", last_etag="0000", timeout_sec="30")
    assert time.monotonic() - started < 3
    assert response.text == "web"
    assert response.headers["etag"] != "0000"


def test_unchanged_value_returns_after_timeout_sec(md: Metadata) -> None:
    """With the current ETag and no change, the request returns the same value at timeout_sec."""
    etag = md.get(ROLE).headers["etag"]
    started = time.monotonic()
    response = md.get(ROLE, wait_for_change="true", last_etag=etag, timeout_sec="1")
    assert 0.9 <= time.monotonic() - started < 5  # returned at timeout_sec, not later
    assert response.status_code == 200
    assert response.headers["etag"] == etag


def test_a_change_wakes_the_hanging_get(md: Metadata) -> None:
    """A hanging GET returns the new value and ETag as soon as the value changes."""
    etag = md.get(ROLE).headers["etag"]
    thread, result = in_background(
        lambda: md.get(ROLE, wait_for_change="true", last_etag=etag, timeout_sec="30")
    )
    until(lambda: md.server.hanging == 1)
    started = time.monotonic()
    set_role(md, "db")
    thread.join(5)
    assert time.monotonic() - started < 3
    (response,) = result
    assert response.text == "db"
    assert response.headers["etag"] != etag
    assert md.server.hanging == 0


def test_without_last_etag_it_waits_for_the_next_change(md: Metadata) -> None:
    """No last_etag: wait for a change of the value as it is now (recursive directory too)."""
    thread, result = in_background(
        lambda: md.get(f"{V1}/instance/attributes/", recursive="true", wait_for_change="true")
    )
    until(lambda: md.server.hanging == 1)
    set_role(md, "cache")
    thread.join(5)
    assert result[0].json() == {"role": "cache"}


def test_changes_elsewhere_do_not_wake_a_watched_value(md: Metadata) -> None:
    """A change to another value leaves a hanging GET waiting."""
    etag = md.get(f"{V1}/instance/name").headers["etag"]
    thread, result = in_background(
        lambda: md.get(
            f"{V1}/instance/name", wait_for_change="true", last_etag=etag, timeout_sec="1"
        )
    )
    until(lambda: md.server.hanging == 1)
    set_role(md, "queue")
    assert md.server.hanging == 1
    thread.join(5)
    assert result[0].text == "instance-1"


def test_hanging_gets_are_capped(services: Services, clock: FixedClock) -> None:
    """Beyond the cap, another wait_for_change is refused with 429 (retryable), not queued."""
    spec = make_spec(port=free_port(), attributes={"role": "web"})
    (server,) = embedded_servers(services, [spec])
    capped = Metadata(
        MetadataServer(server.instance, NoTokens(), clock, max_hanging=1), services, clock
    )
    with capped.client:
        thread, _ = in_background(lambda: capped.get(ROLE, wait_for_change="true", timeout_sec="1"))
        until(lambda: capped.server.hanging == 1)
        refused = capped.get(ROLE, wait_for_change="true", timeout_sec="1")
        assert refused.status_code == 429
        assert refused.headers["metadata-flavor"] == "Google"
        thread.join(5)


def test_close_releases_hanging_gets_at_once(md: Metadata) -> None:
    """At shutdown (stop) every hanging GET answers with its current value straight away."""
    thread, result = in_background(lambda: md.get(ROLE, wait_for_change="true", timeout_sec="30"))
    until(lambda: md.server.hanging == 1)
    started = time.monotonic()
    md.server.stop()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert result[0].text == "web"


def test_a_removed_value_ends_the_wait_with_404(md: Metadata) -> None:
    """If the watched attribute disappears, the hanging GET answers 404."""
    thread, result = in_background(lambda: md.get(ROLE, wait_for_change="true", timeout_sec="30"))
    until(lambda: md.server.hanging == 1)
    md.server.update(dataclasses.replace(md.server.instance.spec, attributes={}))
    thread.join(5)
    assert result[0].status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        f"{V1}/instance/service-accounts/default/token?wait_for_change=true",
        f"{V1}/instance/service-accounts/default/identity?wait_for_change=true&audience=a",
    ],
)
def test_tokens_cannot_be_watched(md: Metadata, path: str) -> None:
    """wait_for_change on token or identity is a 400."""
    response = md.raw(path)
    assert response.status_code == 400
    assert "wait_for_change" in response.text


def test_identity_of_a_running_instance_cannot_change(md: Metadata) -> None:
    """update() refuses to change the port, account, name or zone of a running instance."""
    spec = md.server.instance.spec
    for change in ({"name": "other"}, {"zone": "europe-west1-b"}, {"port": spec.port + 1}):
        with pytest.raises(ConfigError, match="restart"):
            md.server.update(dataclasses.replace(spec, **change))  # type: ignore[arg-type]
