"""One real ``tokensmith serve`` process per test module, for the CLI and client tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tokensmith.testing import LiveServer


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("live")).start()
    yield server
    server.stop()
