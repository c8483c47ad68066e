"""Numbers at rest: AES-GCM with an application key (SPEC §7, issue 5).

The key comes from DIALGUARD_DATA_KEY (base64 of 32 bytes), from the
environment or the secrets file `dialguard init` writes. There is no default
and nothing is derived: without a key nothing is sealed or opened (an error
that says how to make one). Keep it apart from the database.

Rotation (docs/OPERATIONS.md): the new key goes into DIALGUARD_DATA_KEY and
the previous ones into DIALGUARD_DATA_KEY_OLD (comma-separated, newest
first). Everything is sealed with the current key; opening tries the current
key, then each old one (a token carries no key id: AES-GCM's tag tells a
wrong key apart). An old key may be dropped only once nothing sealed with it
is kept any more (audit rows are append-only: as long as they are retained).
Both settings are read from the environment, then from the config file.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_AAD = b"dialguard-number"
_BLOCK_AAD = b"dialguard-dnc-block:"  # + the block's hashes


def _setting(name: str, default: str = "") -> str:
    from dialguard.config import _env

    return _env(name, default)


def _decode_key(raw: str, name: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} must be base64 of 32 bytes (e.g. `openssl rand -base64 32`)") from None
    if len(key) != 32:
        raise ValueError(f"{name} must be base64 of 32 bytes, not {len(key)} (e.g. `openssl rand -base64 32`)")
    return key


def data_key() -> bytes:
    """The current key: everything is sealed with it."""
    raw = _setting("DIALGUARD_DATA_KEY")
    if not raw:
        from dialguard.config import INIT_HINT

        raise ValueError(f"DIALGUARD_DATA_KEY is not set: no number can be sealed or opened; {INIT_HINT}")
    return _decode_key(raw, "DIALGUARD_DATA_KEY")


def old_data_keys() -> list[bytes]:
    """Previous keys (DIALGUARD_DATA_KEY_OLD, comma-separated): opening only."""
    raw = _setting("DIALGUARD_DATA_KEY_OLD")
    return [_decode_key(part, "DIALGUARD_DATA_KEY_OLD") for part in raw.split(",") if part.strip()]


class Sealer:
    """seal() with the current key; open() with the current key, then the old ones.

    ``Sealer()`` takes both from the settings; ``Sealer(key)`` uses that key
    only, unless ``old_keys`` are given as well.
    """

    def __init__(self, key: bytes | None = None, old_keys: list[bytes] | None = None):
        if key is None:
            key = data_key()
            if old_keys is None:
                old_keys = old_data_keys()
        self._aead = AESGCM(key)
        self._old = [AESGCM(k) for k in (old_keys or ()) if k != key]

    def seal(self, text: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, text.encode(), _AAD)).decode()

    def seal_raw(self, text: str) -> bytes:
        """seal() without the base64: nonce + ciphertext, for bytea columns (dnc_entries)."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, text.encode(), _AAD)

    def seal_raw_many(self, texts: list[bytes]) -> list[bytes]:
        """seal_raw() of each UTF-8 text, for bulk imports: a fresh random 12-byte nonce
        each, the nonces drawn in one read of the system's random source."""
        rnd = os.urandom(12 * len(texts))
        enc = self._aead.encrypt
        out = []
        for i, text in enumerate(texts):
            nonce = rnd[12 * i:12 * i + 12]
            out.append(nonce + enc(nonce, text, _AAD))
        return out

    def seal_block(self, plain: bytes, hashes: bytes) -> bytes:
        """A DNC block's numbers (dialguard/dnc.py, dnc_blocks.sealed) sealed as one:
        nonce + AES-GCM of `plain`, bound to the block's `hashes` (authenticated, not
        encrypted), so a block's numbers cannot be paired with another block's hashes."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plain, _BLOCK_AAD + hashes)

    def open_block(self, blob: bytes, hashes: bytes) -> bytes:
        """seal_block's plaintext, with the current key or an old one; InvalidTag otherwise."""
        blob = bytes(blob)
        for aead in (self._aead, *self._old):
            try:
                return aead.decrypt(blob[:12], blob[12:], _BLOCK_AAD + hashes)
            except InvalidTag:
                continue
        raise InvalidTag()

    def open(self, token: str | bytes) -> str:
        """The plaintext of a seal() token or of seal_raw() bytes; InvalidTag when no
        configured key opens it."""
        blob = _blob(token)
        try:
            return self._aead.decrypt(blob[:12], blob[12:], _AAD).decode()
        except InvalidTag:
            for aead in self._old:
                try:
                    return aead.decrypt(blob[:12], blob[12:], _AAD).decode()
                except InvalidTag:
                    continue
            raise

    def sealed_with_current_key(self, token: str | bytes) -> bool:
        """False for a token only an old key opens (a candidate for re-sealing)."""
        blob = _blob(token)
        try:
            self._aead.decrypt(blob[:12], blob[12:], _AAD)
            return True
        except InvalidTag:
            return False


def _blob(token: str | bytes) -> bytes:
    """nonce + ciphertext: base64 text (seal) or the raw bytes (seal_raw, a bytea column)."""
    if isinstance(token, str):
        return base64.b64decode(token)
    return bytes(token)
