"""Tokens at rest: AES-256-GCM, the key id stored in each blob so keys can rotate.

Blob layout: b"v1." + kid (ascii) + b"." + 12-byte nonce + ciphertext||tag. The connection id is
bound as associated data, so a blob copied onto another connection's row does not decrypt.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = b"v1."


class TokenDecryptError(Exception):
    """Unknown key id or tampered ciphertext. The message never contains key or plaintext."""


class TokenBox:
    def __init__(self, keys: tuple[tuple[str, bytes], ...]) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self._primary = keys[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    @property
    def primary_key_id(self) -> str:
        return self._primary

    def encrypt(self, plaintext: str, *, bound_to: str) -> bytes:
        nonce = os.urandom(12)
        sealed = self._keys[self._primary].encrypt(nonce, plaintext.encode(), bound_to.encode())
        return _PREFIX + self._primary.encode() + b"." + nonce + sealed

    def decrypt(self, blob: bytes, *, bound_to: str) -> str:
        return self._open(blob, bound_to)

    def key_id_of(self, blob: bytes) -> str:
        if not blob.startswith(_PREFIX):
            raise TokenDecryptError("not a mailsync token blob")
        kid, sep, _ = blob[len(_PREFIX):].partition(b".")
        if not sep:
            raise TokenDecryptError("token blob has no key id")
        return kid.decode("ascii", "replace")

    def needs_rotation(self, blob: bytes) -> bool:
        return self.key_id_of(blob) != self._primary

    def _open(self, blob: bytes, bound_to: str) -> str:
        kid = self.key_id_of(blob)
        aead = self._keys.get(kid)
        if aead is None:
            raise TokenDecryptError(f"token encrypted with unknown key id {kid!r}")
        body = blob[len(_PREFIX) + len(kid) + 1:]
        try:
            return aead.decrypt(body[:12], body[12:], bound_to.encode()).decode()
        except InvalidTag:
            raise TokenDecryptError(f"token blob failed authentication (key id {kid!r})") from None
