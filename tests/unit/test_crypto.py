import os

import pytest

from services.core.adapters.crypto import TokenBox, TokenDecryptError


def box(*kids):
    return TokenBox(tuple((kid, os.urandom(32)) for kid in kids))


def test_round_trip_and_ciphertext_hides_plaintext():
    b = box("k1")
    blob = b.encrypt("refresh-token-value", bound_to="conn-1")
    assert b"refresh-token-value" not in blob
    assert b.decrypt(blob, bound_to="conn-1") == "refresh-token-value"
    assert b.key_id_of(blob) == "k1"


def test_blob_bound_to_its_connection():
    b = box("k1")
    blob = b.encrypt("secret", bound_to="conn-1")
    with pytest.raises(TokenDecryptError):
        b.decrypt(blob, bound_to="conn-2")


def test_rotation_old_key_still_decrypts_new_key_encrypts():
    old_key = os.urandom(32)
    old = TokenBox((("old", old_key),))
    blob = old.encrypt("t", bound_to="c")
    rotated = TokenBox((("new", os.urandom(32)), ("old", old_key)))
    assert rotated.decrypt(blob, bound_to="c") == "t"
    assert rotated.needs_rotation(blob)
    assert rotated.key_id_of(rotated.encrypt("t", bound_to="c")) == "new"


def test_tampering_and_unknown_keys_fail_without_leaking():
    b = box("k1")
    blob = bytearray(b.encrypt("secret", bound_to="c"))
    blob[-1] ^= 1
    with pytest.raises(TokenDecryptError) as info:
        b.decrypt(bytes(blob), bound_to="c")
    assert "secret" not in str(info.value)
    with pytest.raises(TokenDecryptError, match="unknown key id"):
        box("other").decrypt(b.encrypt("x", bound_to="c"), bound_to="c")
