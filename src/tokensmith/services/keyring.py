"""Rotating key sets: the issuer's (access and ID tokens) and each service account's
system-managed keys (signBlob, signJwt), rotated without ever breaking a verifier.

Keys live sealed in the store; this keyring holds them decrypted in memory, parsed once (no
per-request key parsing), and asks ``crypto.rotation`` — a pure function of ``now`` — when a
new key must be created. ``signer()`` is the hot path: a scan of a handful of windows.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence

from tokensmith.clock import Clock
from tokensmith.crypto.keys import PrivateKey, PublicKey, generate_rsa_key, load_private_pem
from tokensmith.crypto.rotation import (
    KeyWindow,
    RotationPolicy,
    next_window,
    published,
    signing_key,
)
from tokensmith.crypto.sealing import KeyEncryptionKey
from tokensmith.store.base import Conflict, SigningKeyRecord, Store

__all__ = ["IssuerKeyring", "Keyring", "LoadedKey"]

log = logging.getLogger("tokensmith.keys")

ISSUER = "issuer"
_MISS_REFRESH_INTERVAL = 1.0
_PUBLISHED_REFRESH_INTERVAL = 5.0


@dataclasses.dataclass(frozen=True)
class LoadedKey:
    window: KeyWindow
    private: PrivateKey
    certificate_pem: str

    @property
    def key_id(self) -> str:
        return self.window.key_id

    @property
    def public(self) -> PublicKey:
        return self.private.public


class Keyring:
    def __init__(
        self,
        store: Store,
        kek: KeyEncryptionKey,
        clock: Clock,
        policy: RotationPolicy | None = None,
        purpose: str = ISSUER,
        common_name: str = "tokensmith issuer",
    ) -> None:
        self._store = store
        self._kek = kek
        self._clock = clock
        self.policy = policy or RotationPolicy()
        self._purpose = purpose
        self._common_name = common_name
        self._keys: dict[str, LoadedKey] = {}
        self._lock = threading.Lock()
        self._last_miss_refresh = float("-inf")
        self._last_published_refresh = float("-inf")
        self._create_lock = threading.Lock()

    # loading and rotation -----------------------------------------------------------------

    def refresh(self) -> None:
        """Load keys created since the last refresh (by this node or another)."""
        records = self._store.list_signing_keys(self._purpose)
        with self._lock:
            for record in records:
                if record.key_id not in self._keys:
                    self._keys[record.key_id] = self._load(record)

    def _load(self, record: SigningKeyRecord) -> LoadedKey:
        pem = self._kek.open(record.private_key_sealed, record.key_id)
        window = KeyWindow(
            key_id=record.key_id,
            publish_at=record.publish_at,
            sign_from=record.sign_from,
            sign_until=record.sign_until,
            unpublish_at=record.unpublish_at,
        )
        return LoadedKey(
            window, load_private_pem(record.key_id, pem, trusted=True), record.certificate_pem
        )

    def ensure(self, *, force: bool = False) -> str | None:
        """Create the key the rotation policy asks for now, if any; returns its id."""
        # Two threads, or two nodes, must not both create "the next" key.
        with self._create_lock, self._store.exclusive(f"keyring:{self._purpose}"):
            return self._ensure(force)

    def _ensure(self, force: bool) -> str | None:
        now = self._clock.now()
        self.refresh()
        plan = next_window(self._windows(), now, self.policy, force=force)
        if plan is None:
            return None
        publish_at, sign_from, sign_until, unpublish_at = plan
        key = generate_rsa_key()
        record = SigningKeyRecord(
            key_id=key.key_id,
            purpose=self._purpose,
            algorithm="RS256",
            public_key_pem=key.public.pem,
            certificate_pem=key.self_signed_certificate(
                self._common_name, publish_at, unpublish_at
            ),
            private_key_sealed=self._kek.seal(key.pkcs8_pem().encode(), key.key_id),
            created_at=now,
            publish_at=publish_at,
            sign_from=sign_from,
            sign_until=sign_until,
            unpublish_at=unpublish_at,
        )
        try:
            self._store.insert_signing_key(record)
        except Conflict:  # pragma: no cover - 160-bit random ids do not collide
            return None
        log.info("%s key %s created, signs from %s", self._purpose, key.key_id, sign_from)
        self.refresh()
        return key.key_id

    def _windows(self) -> list[KeyWindow]:
        with self._lock:
            return [k.window for k in self._keys.values()]

    # use ---------------------------------------------------------------------------------

    def signer(self) -> LoadedKey:
        """The key that signs now; prepares the next key when the policy says it is time."""
        now = self._clock.now()
        windows = self._windows()
        if next_window(windows, now, self.policy) is not None:
            self.ensure()
            windows = self._windows()
            now = self._clock.now()  # the new key's window starts at ensure()'s "now"
        window = signing_key(windows, now, self.policy)
        if window is None:  # pragma: no cover - ensure() always leaves a signing key
            raise RuntimeError("no issuer key can sign now")
        with self._lock:
            return self._keys[window.key_id]

    def published(self) -> Sequence[LoadedKey]:
        """Keys to publish now (verifiers must know them), oldest first.

        Reloads from the store at most every few seconds, so a key created elsewhere (another
        node, or ``tokensmith keys rotate``) is published long before it may sign.
        """
        now = self._clock.now()
        if now - self._last_published_refresh >= _PUBLISHED_REFRESH_INTERVAL:
            self._last_published_refresh = now
            self.refresh()
        with self._lock:
            return [self._keys[w.key_id] for w in published(self._windows_unlocked(), now)]

    def _windows_unlocked(self) -> list[KeyWindow]:
        return [k.window for k in self._keys.values()]

    def verification_key(self, key_id: str) -> PublicKey | None:
        """The public key for ``key_id`` if it is published now; unpublished keys verify nothing."""
        now = self._clock.now()
        with self._lock:
            loaded = self._keys.get(key_id)
        if loaded is None and now - self._last_miss_refresh >= _MISS_REFRESH_INTERVAL:
            # Another node may have created the key; look, but at most once per interval so a
            # flood of tokens with made-up key ids cannot turn into a flood of queries.
            self._last_miss_refresh = now
            self.refresh()
            with self._lock:
                loaded = self._keys.get(key_id)
        if loaded is None:
            return None
        window = loaded.window
        if not window.publish_at <= now < window.unpublish_at:
            return None
        return loaded.public


IssuerKeyring = Keyring  # the issuer's key set is a Keyring with purpose "issuer"
