"""System-managed keys of service accounts: the keys ``signBlob`` and ``signJwt`` sign with.

Each account has its own rotating key set (a ``Keyring`` whose purpose is ``sa:<uniqueId>``),
created on first use — by a signing request or by a request for the account's public keys,
so a verifier that fetched the keys before the first signature already has the key.
Google's promise is kept: a key is published at least 6 hours before it first signs (except
an account's very first key) and stays published at least 12 hours after it last signed
(https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tokensmith.clock import Clock
from tokensmith.crypto.rotation import RotationPolicy
from tokensmith.crypto.sealing import KeyEncryptionKey
from tokensmith.services.keyring import Keyring, LoadedKey
from tokensmith.store.base import ServiceAccountRecord, Store

__all__ = ["SYSTEM_KEY_POLICY", "AccountKeys"]

SYSTEM_KEY_POLICY = RotationPolicy(
    rotation_period=14 * 86400.0,
    prepublish=6 * 3600.0,
    max_token_lifetime=12 * 3600.0,
    skew=300.0,
)


class AccountKeys:
    def __init__(
        self,
        store: Store,
        kek: KeyEncryptionKey,
        clock: Clock,
        policy: RotationPolicy = SYSTEM_KEY_POLICY,
    ) -> None:
        self._store = store
        self._kek = kek
        self._clock = clock
        self.policy = policy
        self._rings: dict[str, Keyring] = {}
        self._lock = threading.Lock()

    def ring(self, account: ServiceAccountRecord) -> Keyring:
        with self._lock:
            ring = self._rings.get(account.unique_id)
            if ring is None:
                ring = Keyring(
                    self._store,
                    self._kek,
                    self._clock,
                    self.policy,
                    purpose=f"sa:{account.unique_id}",
                    common_name=account.email,
                )
                ring.refresh()
                self._rings[account.unique_id] = ring
            return ring

    def signer(self, account: ServiceAccountRecord) -> LoadedKey:
        return self.ring(account).signer()

    def published(self, account: ServiceAccountRecord) -> Sequence[LoadedKey]:
        ring = self.ring(account)
        ring.signer()  # creates the first key (or the next one) before anyone looks
        return ring.published()

    def rotate(self, account: ServiceAccountRecord) -> str | None:
        return self.ring(account).ensure(force=True)

    def maintain(self) -> None:
        """Run the rotation check of every account key set in use (the server's loop)."""
        with self._lock:
            rings = list(self._rings.values())
        for ring in rings:
            ring.ensure()
