"""``Client``: JSON over HTTP to a tokensmith server's REST APIs, with a bearer token.

The IAM API (https://cloud.google.com/iam/docs/reference/rest) and Resource Manager
(https://cloud.google.com/resource-manager/reference/rest) as tokensmith serves them; paths are
the caller's business, this class only authenticates, sends and turns failures into one
``ClientError``. Its one I/O seam is the ``httpx`` transport, so tests can hand it an
``httpx.MockTransport``.
"""

from __future__ import annotations

from typing import Any

import httpx

from tokensmith.client.credentials import Credentials
from tokensmith.client.errors import ClientError, error_from_response, unreachable

__all__ = ["Client"]


class Client:
    """Calls ``base_url`` + path with the token ``credentials`` buy; returns the JSON object."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        url = self.base_url + path
        response = self._send(method, url, json, params)
        if response.status_code == 401:
            # The cached token may have been revoked or outlived a server restart: one retry
            # with a fresh token, then the server's answer stands.
            self.credentials.invalidate()
            response = self._send(method, url, json, params)
        if not response.is_success:
            raise error_from_response(response)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ClientError(
                f"{self.base_url} answered {method} {path} with something other than a JSON "
                f"object (HTTP {response.status_code}); is it a tokensmith server?"
            )
        return body

    def _send(
        self, method: str, url: str, json: Any, params: dict[str, Any] | None
    ) -> httpx.Response:
        token = self.credentials.token(self._http)
        try:
            return self._http.request(
                method,
                url,
                json=json,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.TransportError as exc:
            raise unreachable(url, exc) from None
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid server URL {self.base_url!r}: {exc}") from None

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> dict[str, Any]:
        return self.request("POST", path, json={} if json is None else json)

    def patch(self, path: str, json: Any) -> dict[str, Any]:
        return self.request("PATCH", path, json=json)

    def delete(self, path: str) -> dict[str, Any]:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
