"""Numbers at rest: AES-GCM with an application key (SPEC §7, issue 5).

The key comes from DIALGUARD_DATA_KEY (base64 of 32 bytes). Without it a
development key is derived from the hash secret so a dev stack works; a
production install sets its own and keeps it apart from the database.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def data_key() -> bytes:
    raw = os.environ.get("DIALGUARD_DATA_KEY")
    if raw:
        key = base64.b64decode(raw)
        if len(key) != 32:
            raise ValueError("DIALGUARD_DATA_KEY must be base64 of 32 bytes")
        return key
    secret = os.environ.get("DIALGUARD_HASH_SECRET", "dev-only-insecure-secret")
    return hashlib.sha256(b"dialguard-data-key:" + secret.encode()).digest()


class Sealer:
    def __init__(self, key: bytes | None = None):
        self._aead = AESGCM(key or data_key())

    def seal(self, text: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), b"dialguard-number")).decode()

    def open(self, token: str) -> str:
        blob = base64.b64decode(token)
        return self._aead.decrypt(blob[:12], blob[12:], b"dialguard-number").decode()
