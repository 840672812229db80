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
import sys
import threading
from pathlib import Path

from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings
from tokensmith.crypto.rotation import RotationPolicy
from tokensmith.crypto.sealing import KeyEncryptionKey, load_or_create_kek
from tokensmith.services.accounts import Accounts
from tokensmith.services.audit import Auditor
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
from tokensmith.store.sql import SqlStore, make_engine

__all__ = ["Services", "build", "serve", "start_maintenance"]

log = logging.getLogger("tokensmith")


@dataclasses.dataclass
class Services:
    settings: Settings
    clock: Clock
    store: SqlStore
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
    store = SqlStore(engine)
    kek, generated = load_or_create_kek(settings.kek_path, settings.kek)
    keyring = IssuerKeyring(store, kek, clock, rotation)
    directory = Directory(store)
    auditor = Auditor(store, clock)
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


def _write_listeners(settings: Settings) -> Path:
    """Record where this server listens, for ``tokensmith env`` and the CLI."""
    path = settings.data_dir / "server.json"
    path.write_text(
        json.dumps(
            {"pid": os.getpid(), "api": settings.base_url, "token_uri": settings.token_uri},
            indent=2,
        )
        + "\n"
    )
    return path


def serve(settings: Settings) -> None:
    import uvicorn

    from tokensmith.api.app import create_app

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    services = build(settings)
    if services.kek_generated:
        log.warning(
            "generated a new key-encryption key at %s (mode 0600). It protects every private "
            "key in the store: back it up, and in production supply your own with "
            "TOKENSMITH_KEK or --kek-file.",
            settings.kek_path,
        )
    app = create_app(services)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    listeners = _write_listeners(settings)
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
    try:
        server.run()
    finally:
        maintenance.set()
        listeners.unlink(missing_ok=True)
        services.close()
        print("tokensmith stopped", flush=True)
