"""Sealing what the gateway keeps in a shared state backend.

Takes the 32-byte `state.encryption_key` (base64, inline/${ENV} or from
`state.encryption_key_file`). `Sealer.seal(name, data)` encrypts with AES-GCM
(a random 96-bit nonce per value) and binds the value to the key name it is
stored under (the associated data), so a value copied to another key does not
open. `Sealer.name(*parts)` turns what would reveal a user or a source address
(an object id, an IP address) into an HMAC of it, keyed from the same secret:
key names in the store show neither, and cannot be guessed back from a list of
candidates without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config.model import EncryptionKeyError, State

KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE = 12


def load_key(state: State) -> bytes:
    """The configured key; EncryptionKeyError (a ValueError) or OSError says why not."""
    return state.key()


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(f"expected a {KEY_BYTES}-byte key, got {len(key)} bytes")
        self._aead = AESGCM(key)
        self._names = hmac.new(key, b"azdo-gateway state key names", hashlib.sha256).digest()

    def seal(self, name: str, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, data, name.encode())

    def open(self, name: str, blob: bytes) -> bytes | None:
        """The plaintext, or None when `blob` was not sealed for `name` with this key."""
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
            return None
        nonce = blob[1 : 1 + _NONCE]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE :], name.encode())
        except InvalidTag:
            return None

    def name(self, *parts: str) -> str:
        """A stable, unguessable stand-in for `parts` in a key name (128 bits, hex)."""
        data = "\x00".join(parts).encode()
        return hmac.new(self._names, data, hashlib.sha256).hexdigest()[:32]
