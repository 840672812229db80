"""The composition root: the one place that builds and wires every part of a server.

``build(settings)`` opens the store (migrating it), loads the key-encryption key, creates the
services and runs the bootstrap; ``serve(settings)`` adds the HTTP listener and the signal
handling. Tests call ``build`` with a ``FixedClock`` to drive a whole server in-process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.crypto.rotation import RotationPolicy
from tokensmith.crypto.sealing import KeyEncryptionKey, load_or_create_kek
from tokensmith.process import Listener, bind, run_listeners, supervise
from tokensmith.proxy.listener import ProxyListener
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
from tokensmith.store.base import ProjectRecord
from tokensmith.store.cached import CachedStore, SharedEpoch
from tokensmith.store.sql import SqlStore, make_engine

__all__ = ["Listener", "Services", "bind", "build", "run_listeners", "serve", "start_maintenance"]

log = logging.getLogger("tokensmith")


@dataclasses.dataclass
class Services:
    settings: Settings
    clock: Clock
    store: CachedStore  # the cached view every service uses
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
        """Periodic duties: rotate the issuer's and the accounts' keys when it is time, and
        forget revocations of tokens that have expired (they are refused anyway)."""
        self.keyring.ensure()
        self.account_keys.maintain()
        self.store.prune_revoked(self.clock.now() - REVOCATION_GRACE)

    def close(self) -> None:
        self.auditor.close()
        self.store.close()


MAINTENANCE_INTERVAL = 60.0
LONG_CACHE_TTL = 300.0
REVOCATION_GRACE = 3600.0  # beyond any leeway a verifier applies to exp


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
    if services.sql.engine.dialect.name == "postgresql":
        # Other nodes' changes arrive as notifications; until the listener connects the cache
        # keeps entries only for the short TTL.
        threading.Thread(
            target=services.sql.listen_for_changes,
            args=(services.store.invalidate_local, services.store.changes_announced, stop),
            name="tokensmith-changes",
            daemon=True,
        ).start()
    return stop


def build(
    settings: Settings,
    clock: Clock | None = None,
    *,
    rotation: RotationPolicy | None = None,
    auto_migrate: bool = True,
    epoch: SharedEpoch | None = None,
) -> Services:
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    if auto_migrate:
        migrate.upgrade(engine)
    migrate.check(engine)
    sql = SqlStore(engine)
    sqlite = engine.dialect.name == "sqlite"
    # SQLite: every writer is this node (its workers share the epoch), so nothing can change
    # behind the cache's back; PostgreSQL: long entries only while the change listener runs.
    store = CachedStore(sql, clock, epoch=epoch, long_ttl=LONG_CACHE_TTL, announced=sqlite)
    kek, generated = load_or_create_kek(settings.kek_path, settings.kek)
    keyring = IssuerKeyring(store, kek, clock, rotation)
    directory = Directory(store)
    auditor = Auditor(store, clock, AuditWriter(store))
    authn = Authenticator(store, directory, keyring, clock, settings.issuer, settings.base_url)
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


def _write_listeners(
    settings: Settings,
    metadata: list[dict[str, Any]] | None = None,
    proxy: ProxyListener | None = None,
) -> Path:
    """Record where this server listens, for ``tokensmith env`` and the CLI."""
    path = settings.data_dir / "server.json"
    record: dict[str, Any] = {
        "pid": os.getpid(),
        "api": settings.base_url,
        "token_uri": settings.token_uri,
    }
    if metadata:
        record["metadata"] = metadata
    if proxy is not None:
        record["proxy"] = proxy.record()
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


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
    """Run the server: bind, prepare the store, announce, then serve in-process or in workers."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    api_socket = bind(settings.host, settings.port)
    proxy = _open_proxy(settings, api_socket)
    services = build(settings)
    if services.kek_generated:
        log.warning(
            "generated a new key-encryption key at %s (mode 0600). It protects every private "
            "key in the store: back it up, and in production supply your own with "
            "TOKENSMITH_KEK or --kek-file.",
            settings.kek_path,
        )
    metadata = _metadata_listeners(settings, services)
    sockets = [api_socket, *(m.sock for m in metadata)]
    listeners_file = _write_listeners(settings, [m.app.record() for m in metadata], proxy)
    workers = settings.worker_count
    _announce(settings, services, metadata, workers)
    if proxy is not None:
        print(f"  https proxy:        {proxy.describe()}", flush=True)
    try:
        if workers <= 1:
            _serve_in_process(settings, services, metadata, api_socket, proxy)
        else:
            # Workers build their own services after the fork; nothing may be left running here.
            services.close()
            epoch = SharedEpoch()
            supervise(workers, lambda _index: _worker(settings, sockets, epoch, proxy))
    finally:
        listeners_file.unlink(missing_ok=True)
        for sock in sockets:
            sock.close()
        if proxy is not None:
            proxy.sock.close()
        print("tokensmith stopped", flush=True)


def _announce(
    settings: Settings, services: Services, metadata: list[Listener], workers: int
) -> None:
    print(f"tokensmith listening on {settings.base_url}", flush=True)
    print(
        f"  project:            {services.project.project_id} "
        f"(number {services.project.project_number})",
        flush=True,
    )
    print(f"  owner credentials:  {services.owner_credentials_path.resolve()}", flush=True)
    print(f"  token endpoint:     {settings.token_uri}", flush=True)
    print(f"  issuer:             {settings.issuer}", flush=True)
    print(f"  workers:            {workers}", flush=True)
    for listener in metadata:
        print(f"  metadata server:    {listener.app.describe()}", flush=True)


def _serve_in_process(
    settings: Settings,
    services: Services,
    metadata: list[Listener],
    api_socket: socket.socket,
    proxy: ProxyListener | None = None,
) -> None:
    from tokensmith.api.app import create_app

    listeners = [Listener("api", create_app(services), api_socket), *metadata]
    maintenance = start_maintenance(services)
    watching = _watch_metadata_config(settings, metadata)
    try:
        run_listeners(listeners, settings.log_level, [proxy.serve] if proxy else [])
    finally:
        watching.set()
        maintenance.set()
        services.close()


def _worker(
    settings: Settings,
    sockets: list[socket.socket],
    epoch: SharedEpoch,
    proxy: ProxyListener | None = None,
) -> int:
    """One worker process: its own services on the shared store, on the inherited sockets."""
    from tokensmith.metadata.embedded import embedded_servers, instance_specs

    services = build(settings, epoch=epoch)
    servers = embedded_servers(services, instance_specs(settings))
    metadata = [
        Listener(f"metadata {server.instance.name}", server, sock, server.stop, False)
        for server, sock in zip(servers, sockets[1:], strict=True)
    ]
    _serve_in_process(settings, services, metadata, sockets[0], proxy)
    return 0


def _open_proxy(settings: Settings, api_socket: socket.socket) -> ProxyListener | None:
    """The HTTPS proxy for Google's hard-coded hosts (``--proxy-port``), relaying to the API."""
    if not settings.proxy_port:
        return None
    from tokensmith.proxy import loopback_upstream, open_proxy

    try:
        return open_proxy(
            settings.proxy_host,
            settings.proxy_port,
            settings.proxy_domains.split(","),
            settings.data_dir / "ca",
            loopback_upstream(api_socket),
        )
    except ValueError as exc:
        raise SystemExit(f"error: --proxy-domains: {exc}") from None
