"""The composition root: the one place that builds and wires every part of a server.

``build(settings)`` opens the store (migrating it), loads the key-encryption key, creates the
services and runs the bootstrap; ``serve(settings)`` adds the HTTP listener and the signal
handling. Tests call ``build`` with a ``FixedClock`` to drive a whole server in-process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.crypto.rotation import RotationPolicy
from tokensmith.crypto.sealing import KeyEncryptionKey, load_or_create_kek
from tokensmith.services.accounts import Accounts
from tokensmith.services.audit import Auditor, AuditWriter
from tokensmith.services.authn import Authenticator
from tokensmith.services.bootstrap import Bootstrap
from tokensmith.services.credentials import Credentials
from tokensmith.services.directory import Directory
from tokensmith.services.iam import Iam
from tokensmith.services.keyring import IssuerKeyring
from tokensmith.services.oauth import OAuth
from tokensmith.services.orgpolicy import OrgPolicies
from tokensmith.services.sakeys import AccountKeys
from tokensmith.services.tokeninfo import TokenInfo
from tokensmith.services.tokens import TokenMinter
from tokensmith.store import migrate
from tokensmith.store.base import ProjectRecord, Store
from tokensmith.store.cached import CachedStore
from tokensmith.store.sql import SqlStore, make_engine

__all__ = ["Listener", "Services", "bind", "build", "run_listeners", "serve", "start_maintenance"]

log = logging.getLogger("tokensmith")


@dataclasses.dataclass
class Services:
    settings: Settings
    clock: Clock
    store: Store  # the cached view every service uses
    sql: SqlStore
    kek: KeyEncryptionKey
    kek_generated: bool
    keyring: IssuerKeyring
    directory: Directory
    authn: Authenticator
    minter: TokenMinter
    auditor: Auditor
    iam: Iam
    accounts: Accounts
    orgpolicy: OrgPolicies
    oauth: OAuth
    account_keys: AccountKeys
    credentials: Credentials
    tokeninfo: TokenInfo
    project: ProjectRecord

    @property
    def owner_credentials_path(self) -> Path:
        return self.settings.credentials_dir / "owner.json"

    def maintain(self) -> None:
        """Periodic duties: rotate the issuer's and the accounts' keys when it is time."""
        self.keyring.ensure()
        self.account_keys.maintain()

    def close(self) -> None:
        self.auditor.close()
        self.store.close()


MAINTENANCE_INTERVAL = 60.0


def start_maintenance(
    services: Services, interval: float = MAINTENANCE_INTERVAL
) -> threading.Event:
    """Run ``services.maintain()`` every ``interval`` seconds until the returned event is set.

    Rotation also happens on the signing path, but an idle server must prepare its next key
    ``prepublish`` ahead too, or its first request after the switch would sign in the grace.
    """
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                services.maintain()
            except Exception:  # keep the loop alive; the next round retries
                log.exception("maintenance round failed")

    threading.Thread(target=loop, name="tokensmith-maintenance", daemon=True).start()
    return stop


def build(
    settings: Settings,
    clock: Clock | None = None,
    *,
    rotation: RotationPolicy | None = None,
    auto_migrate: bool = True,
) -> Services:
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    if auto_migrate:
        migrate.upgrade(engine)
    migrate.check(engine)
    sql = SqlStore(engine)
    store = CachedStore(sql, clock)
    kek, generated = load_or_create_kek(settings.kek_path, settings.kek)
    keyring = IssuerKeyring(store, kek, clock, rotation)
    directory = Directory(store)
    auditor = Auditor(store, clock, AuditWriter(store))
    authn = Authenticator(store, directory, keyring, clock, settings.issuer)
    minter = TokenMinter(keyring, clock, settings.issuer)
    iam = Iam(store, clock, auditor)
    accounts = Accounts(store, clock, iam, auditor, settings.token_uri, settings.base_url)
    orgpolicy = OrgPolicies(store, clock, iam, auditor)
    oauth = OAuth(
        store,
        clock,
        minter,
        authn,
        auditor,
        own_audiences=frozenset({settings.token_uri, f"{settings.base_url}/oauth2/v4/token"}),
    )
    account_keys = AccountKeys(store, kek, clock)
    credentials = Credentials(
        store, clock, iam, directory, minter, account_keys, orgpolicy, auditor
    )
    tokeninfo = TokenInfo(authn, keyring, clock, settings.issuer)
    project = Bootstrap(store, clock, iam, keyring, oauth).run(
        project_id=settings.project,
        owner_email=settings.owner_email,
        credentials_path=settings.credentials_dir / "owner.json",
        token_uri=settings.token_uri,
    )
    return Services(
        settings=settings,
        clock=clock,
        store=store,
        sql=sql,
        kek=kek,
        kek_generated=generated,
        keyring=keyring,
        directory=directory,
        authn=authn,
        minter=minter,
        auditor=auditor,
        iam=iam,
        accounts=accounts,
        orgpolicy=orgpolicy,
        oauth=oauth,
        account_keys=account_keys,
        credentials=credentials,
        tokeninfo=tokeninfo,
        project=project,
    )


def _write_listeners(settings: Settings, metadata: list[dict[str, Any]] | None = None) -> Path:
    """Record where this server listens, for ``tokensmith env`` and the CLI."""
    path = settings.data_dir / "server.json"
    record: dict[str, Any] = {
        "pid": os.getpid(),
        "api": settings.base_url,
        "token_uri": settings.token_uri,
    }
    if metadata:
        record["metadata"] = metadata
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before anything is announced; a clear error if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"{host}:{port} is already in use (choose another port with --port or "
                "TOKENSMITH_PORT)"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclasses.dataclass(frozen=True)
class Listener:
    """One HTTP listener of the process: a name for the logs, an ASGI app, a bound socket."""

    name: str
    app: Any
    sock: socket.socket
    on_stop: Callable[[], None] | None = None  # called at shutdown (releases hanging requests)
    server_header: bool = True  # uvicorn's "server: uvicorn" (the metadata server sends its own)


def run_listeners(listeners: list[Listener], log_level: str) -> None:
    """Serve every listener in one event loop until SIGTERM or SIGINT, then shut down cleanly.

    uvicorn's own signal handling re-raises the caught signal after shutdown (so the process
    would die by it, skipping our cleanup); here one handler asks every server to exit and the
    process returns normally.
    """
    import asyncio

    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are handled once for all servers, below

    servers = [
        _Server(
            uvicorn.Config(
                listener.app,
                log_level=log_level,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
                server_header=listener.server_header,
            )
        )
        for listener in listeners
    ]

    def stop(_signum: int, _frame: object) -> None:
        for server in servers:
            server.should_exit = True
        for listener in listeners:
            if listener.on_stop is not None:
                listener.on_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve_all(servers, listeners))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _loop_factory() -> Any:
    """uvloop's event loop where installed (it is, with uvicorn[standard]): measurably faster."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return None
    return uvloop.new_event_loop


async def _serve_all(servers: list[Any], listeners: list[Listener]) -> None:
    import asyncio

    await asyncio.gather(
        *(
            server.serve(sockets=[listener.sock])
            for server, listener in zip(servers, listeners, strict=True)
        )
    )


def _metadata_listeners(settings: Settings, services: Services) -> list[Listener]:
    """The metadata server's listeners (``--metadata-port``, ``--metadata-config``), bound."""
    from tokensmith.metadata.embedded import embedded_servers, instance_specs
    from tokensmith.metadata.instance import ConfigError
    from tokensmith.metadata.runtime import bind_instance

    try:
        servers = embedded_servers(services, instance_specs(settings))
    except ConfigError as exc:
        services.close()
        raise SystemExit(f"error: {exc}") from None
    listeners: list[Listener] = []
    try:
        for server in servers:
            sock = bind_instance(server.instance)
            listeners.append(
                Listener(f"metadata {server.instance.name}", server, sock, server.stop, False)
            )
    except OSError:
        for listener in listeners:
            listener.sock.close()
        services.close()
        raise
    return listeners


def _watch_metadata_config(settings: Settings, metadata: list[Listener]) -> threading.Event:
    """Serve edits of ``--metadata-config`` while running (the returned event stops it)."""
    if not (metadata and settings.metadata_config):
        return threading.Event()
    from tokensmith.metadata.runtime import watch_config

    return watch_config(settings.metadata_config, [listener.app for listener in metadata])


def serve(settings: Settings) -> None:
    from tokensmith.api.app import create_app

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    api_socket = bind(settings.host, settings.port)
    services = build(settings)
    if services.kek_generated:
        log.warning(
            "generated a new key-encryption key at %s (mode 0600). It protects every private "
            "key in the store: back it up, and in production supply your own with "
            "TOKENSMITH_KEK or --kek-file.",
            settings.kek_path,
        )
    listeners = [Listener("api", create_app(services), api_socket)]
    metadata = _metadata_listeners(settings, services)
    listeners.extend(metadata)
    listeners_file = _write_listeners(settings, [m.app.record() for m in metadata])
    maintenance = start_maintenance(services)
    print(f"tokensmith listening on {settings.base_url}", flush=True)
    print(
        f"  project:            {services.project.project_id} "
        f"(number {services.project.project_number})",
        flush=True,
    )
    print(f"  owner credentials:  {services.owner_credentials_path.resolve()}", flush=True)
    print(f"  token endpoint:     {settings.token_uri}", flush=True)
    print(f"  issuer:             {settings.issuer}", flush=True)
    for listener in metadata:
        print(f"  metadata server:    {listener.app.describe()}", flush=True)
    watching = _watch_metadata_config(settings, metadata)
    try:
        run_listeners(listeners, settings.log_level)
    finally:
        watching.set()
        maintenance.set()
        listeners_file.unlink(missing_ok=True)
        services.close()
        for listener in listeners:
            listener.sock.close()
        print("tokensmith stopped", flush=True)
