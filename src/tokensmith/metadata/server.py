"""The metadata server of one instance: an ASGI app with Google's header rules and quirks.

https://cloud.google.com/compute/docs/metadata/querying-metadata and COMPAT.md §1 (what
google-auth, Node's gcp-metadata and gcloud send and accept), §7 and B.4:

- every response carries ``Metadata-Flavor: Google`` and ``Server: Metadata Server for VM``;
- ``/computeMetadata/v1`` and below need the request header ``Metadata-Flavor: Google`` (or
  the legacy ``X-Google-Metadata-Request: True``), else 403 with Google's text; ``/`` and
  ``/computeMetadata/`` answer without it (Python's detection ping);
- a request carrying ``X-Forwarded-For`` came through a proxy, not from the workload: 403;
- a directory without its trailing slash is a 301 to it; a value with one (``token/``) is 404;
  unknown paths are 404 with Google's page; nothing a caller sends gives a 5xx (clients retry
  those for many seconds);
- text values are ``application/text``, JSON (``token``, ``recursive=true``, ``alt=json``,
  ``tags``) ``application/json``, ``identity`` never JSON (Python would try to parse the JWT);
- ``wait_for_change=true`` hangs until the value's ETag differs from ``last_etag`` (or from the
  current one) or ``timeout_sec`` passes; at most ``max_hanging`` such requests at a time.

Values come from the instance (``tree``); tokens from a ``TokenSource`` (``sources``), called
in a worker thread because minting reads the store or the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import logging
import threading
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokensmith.clock import Clock
from tokensmith.metadata.instance import ConfigError, Instance, InstanceSpec
from tokensmith.metadata.query import (
    QueryError,
    flag,
    identity_query,
    parse_query,
    scopes_param,
)
from tokensmith.metadata.sources import MetadataError, TokenSource
from tokensmith.metadata.tree import (
    Directory,
    Endpoint,
    Leaf,
    Node,
    build_tree,
    etag_of,
    flatten,
    leaf_text,
    listing,
    lookup,
    to_json,
)

__all__ = ["MAX_HANGING", "MAX_TIMEOUT", "MetadataServer"]

log = logging.getLogger("tokensmith.metadata")

MAX_HANGING = 500
MAX_TIMEOUT = 3600
TEXT = "application/text"
JSON = "application/json"
HTML = "text/html; charset=UTF-8"
RESPONSE_HEADERS = {
    "Metadata-Flavor": "Google",
    "Server": "Metadata Server for VM",
    "X-XSS-Protection": "0",
    "X-Frame-Options": "SAMEORIGIN",
}
GUARDED = "/computeMetadata/v1"
MISSING_AUDIENCE = "non-empty audience parameter required"


@dataclasses.dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def etag(self) -> str:
        return etag_of(self.body)

    def response(self) -> Response:
        headers = dict(RESPONSE_HEADERS)
        if self.status == 200:
            headers["ETag"] = self.etag
        headers.update(self.headers)
        return Response(self.body, self.status, headers=headers, media_type=self.content_type)


def _text(status: int, message: str) -> _Answer:
    return _Answer(status, message.encode(), TEXT)


def _google_page(status: int, reason: str, sentence: str) -> _Answer:
    """Google's error page (its markup, without the logo and the stylesheet)."""
    page = (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
        '  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">\n'
        f"  <title>Error {status} ({reason})!!1</title>\n"
        f"  <p><b>{status}.</b> <ins>That’s an error.</ins>\n"
        f"  <p>{sentence}  <ins>That’s all we know.</ins>\n"
    )
    return _Answer(status, page.encode(), HTML)


def _forbidden(path: str, why: str) -> _Answer:
    return _google_page(
        403,
        "Forbidden",
        f"Your client does not have permission to get URL <code>{html.escape(path)}</code> "
        f"from this server. {why}",
    )


def _not_found(path: str) -> _Answer:
    return _google_page(
        404,
        "Not Found",
        f"The requested URL <code>{html.escape(path)}</code> was not found on this server.",
    )


def _flavored(request: Request) -> bool:
    flavor = request.headers.get("metadata-flavor", "").strip()
    legacy = request.headers.get("x-google-metadata-request", "").strip().lower()
    return flavor == "Google" or legacy == "true"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class MetadataServer:
    """One instance's metadata server, itself the ASGI application that serves it."""

    def __init__(
        self,
        instance: Instance,
        tokens: TokenSource,
        clock: Clock,
        *,
        max_hanging: int = MAX_HANGING,
    ) -> None:
        self._instance = instance
        self._tree = build_tree(instance)
        self._tokens = tokens
        self._clock = clock
        self._max_hanging = max_hanging
        # Reentrant: stop() also runs in a signal handler, on the thread that may hold it.
        self._lock = threading.RLock()
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._hanging = 0
        self._closing = False

    @property
    def instance(self) -> Instance:
        return self._instance

    def record(self) -> dict[str, Any]:
        """This listener as ``server.json`` lists it (``tokensmith env`` reads it)."""
        instance = self._instance
        return {
            "url": instance.url,
            "address": instance.url.removeprefix("http://"),
            "name": instance.name,
            "service_account": instance.service_account,
        }

    def describe(self) -> str:
        instance = self._instance
        return f"{instance.url} (instance {instance.name}, account {instance.service_account})"

    @property
    def hanging(self) -> int:
        """How many ``wait_for_change`` requests are waiting now."""
        return self._hanging

    # changes and shutdown ----------------------------------------------------------------

    def update(self, spec: InstanceSpec) -> None:
        """Serve new attributes, project attributes, tags or scopes; wakes hanging GETs.

        The identity of the instance (port, address, account, name, zone, id, hostname,
        machine type, licenses) is fixed while it runs: changing it needs a restart.
        """
        old = self._instance.spec
        fixed = ("port", "host", "service_account", "name", "zone", "instance_id", "hostname")
        for field in (*fixed, "machine_type", "licenses"):
            if getattr(spec, field) != getattr(old, field):
                raise ConfigError(
                    f"instance {old.name}: {field} cannot change while the server runs; restart"
                )
        instance = dataclasses.replace(self._instance, spec=spec)
        tree = build_tree(instance)
        with self._lock:
            self._instance = instance
            self._tree = tree
            self._version += 1
            waiters = list(self._waiters)
        self._wake_all(waiters)

    def stop(self) -> None:
        """Release every hanging GET (each answers with its current value) and refuse waits."""
        with self._lock:
            self._closing = True
            waiters = list(self._waiters)
        self._wake_all(waiters)

    def close(self) -> None:
        """Stop, and release the token source's connections (after serving has ended)."""
        self.stop()
        self._tokens.close()

    @staticmethod
    def _wake_all(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(_wake, future)

    # ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            answer = await self._respond(request)
        except QueryError as exc:
            answer = _text(400, str(exc))
        except MetadataError as exc:
            answer = _text(exc.status, exc.message)
        except Exception:
            log.exception("metadata request %s failed", request.url.path)
            answer = _text(500, "Internal error.")
        await answer.response()(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, request: Request) -> _Answer:
        path: str = request.scope["path"]
        raw_query = request.scope.get("query_string", b"").decode("utf-8", "replace")
        if "x-forwarded-for" in request.headers:
            return _forbidden(path, "Requests with an X-Forwarded-For header are not allowed.")
        if request.method not in ("GET", "HEAD"):
            return _Answer(405, b"Method not allowed.", TEXT, (("Allow", "GET, HEAD"),))
        guarded = path == GUARDED or path.startswith(GUARDED + "/")
        if guarded and not _flavored(request):
            return _forbidden(path, "Missing Metadata-Flavor:Google header.")
        node = lookup(self._tree, path)
        if node is None:
            return _not_found(path)
        if isinstance(node, Directory) and not path.endswith("/"):
            location = path + "/" + (f"?{raw_query}" if raw_query else "")
            return _Answer(301, b"", HTML, (("Location", location),))
        if not isinstance(node, Directory) and path.endswith("/"):
            return _not_found(path)
        if isinstance(node, Endpoint):
            if node.kind == "identity":
                return await self._identity(raw_query)
            params = parse_query(raw_query)
            if flag(params, "wait_for_change"):
                raise QueryError("wait_for_change is not supported for token")
            return await self._token(params)
        params = parse_query(raw_query)
        answer = self._render(node, params)
        if flag(params, "wait_for_change"):
            answer = await self._wait(path, params, answer)
        return answer

    # values ---------------------------------------------------------------------------------

    @staticmethod
    def _alt(params: dict[str, str], default: str) -> str:
        alt = params.get("alt", default).strip().lower() or default
        if alt not in ("json", "text"):
            raise QueryError(f"invalid alt: {alt[:20]!r} (expected json or text)")
        return alt

    def _render(self, node: Node, params: dict[str, str]) -> _Answer:
        if isinstance(node, Leaf):
            alt = self._alt(params, "json" if node.json_by_default else "text")
            if alt == "json":
                return _Answer(200, orjson.dumps(node.value), JSON)
            return _Answer(200, leaf_text(node).encode(), TEXT)
        assert isinstance(node, Directory)
        recursive = flag(params, "recursive")
        alt = self._alt(params, "json" if recursive else "text")
        value: Any = to_json(node) if recursive else listing(node)
        if alt == "json":
            return _Answer(200, orjson.dumps(value), JSON)
        lines = flatten(node) if recursive else value
        return _Answer(200, "".join(f"{line}\n" for line in lines).encode(), TEXT)

    async def _wait(self, path: str, params: dict[str, str], answer: _Answer) -> _Answer:
        timeout = _timeout(params)
        last_etag = params.get("last_etag", "").strip()
        reference = last_etag or answer.etag
        if answer.etag != reference:
            return answer
        if self._hanging >= self._max_hanging:
            return _text(429, "Too many concurrent wait_for_change requests; retry later.")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._hanging += 1
        try:
            while not self._closing:
                version = self._version
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await self._changed(version, remaining)
                node = lookup(self._tree, path)
                if node is None or isinstance(node, Endpoint):
                    return _not_found(path)
                answer = self._render(node, params)
                if answer.etag != reference:
                    break
        finally:
            self._hanging -= 1
        return answer

    async def _changed(self, version: int, timeout: float) -> None:
        """Return when the tree moves past ``version``, at close, or after ``timeout``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            # Registered first, checked second: a stop() (signal handler) between the two
            # either sees this waiter or is seen by the check.
            self._waiters.add(entry)
            if self._version != version or self._closing:
                self._waiters.discard(entry)
                return
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)

    # tokens ---------------------------------------------------------------------------------

    async def _token(self, params: dict[str, str]) -> _Answer:
        scopes = scopes_param(params) or self._instance.spec.scopes
        minted = await run_in_threadpool(self._tokens.access_token, scopes)
        expires_in = max(0, int(minted.expires_at - self._clock.now()))
        body = {"access_token": minted.token, "expires_in": expires_in, "token_type": "Bearer"}
        return _Answer(200, orjson.dumps(body), JSON)

    async def _identity(self, raw_query: str) -> _Answer:
        audience, params = identity_query(raw_query)
        if flag(params, "wait_for_change"):
            raise QueryError("wait_for_change is not supported for identity")
        if audience is None or not audience.strip():
            return _text(400, MISSING_AUDIENCE)
        token_format = params.get("format", "standard").strip().lower() or "standard"
        if token_format not in ("standard", "full"):
            raise QueryError(f"invalid format: {token_format[:20]!r} (expected standard or full)")
        wanted, full, licenses = audience, token_format == "full", flag(params, "licenses")
        minted = await run_in_threadpool(
            lambda: self._tokens.id_token(wanted, full=full, licenses=licenses)
        )
        return _Answer(200, minted.token.encode(), TEXT)


def _timeout(params: dict[str, str]) -> float:
    raw = params.get("timeout_sec", "").strip()
    if not raw:
        return float(MAX_TIMEOUT)
    if not raw.isdigit():
        raise QueryError(f"invalid timeout_sec: {raw[:20]!r} (expected whole seconds)")
    return float(min(int(raw), MAX_TIMEOUT))
