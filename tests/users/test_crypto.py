"""users/crypto.py: AES-256-GCM tokens that name their key, decrypted with any key of the ring,
bound to their context."""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.test import override_settings

from users.crypto import (
    EMAIL_CONTEXT,
    INGEST_BATCH_CONTEXT,
    NONCE_BYTES,
    DecryptionError,
    decrypt,
    email_decrypt,
    email_encrypt,
    encrypt,
    token_key_id,
)


def ring(*ids: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((key_id, secrets.token_bytes(32)) for key_id in ids)


def test_a_token_names_its_key_and_holds_no_plaintext():
    keys = ring("k2", "k1")
    with override_settings(EMAIL_ENCRYPTION_KEYS=keys):
        token = email_encrypt("Ada.Lovelace@example.com")

        assert token.startswith("v1.k2.")
        assert token_key_id(token) == "k2"
        assert "Lovelace" not in token and "example" not in token
        assert token.isascii() and "=" not in token
        assert email_decrypt(token) == "Ada.Lovelace@example.com"
        assert email_encrypt("Ada.Lovelace@example.com") != token  # a fresh nonce each time


def test_the_token_is_plain_aes_256_gcm_under_the_named_key():
    keys = ring("k1")
    with override_settings(EMAIL_ENCRYPTION_KEYS=keys):
        token = encrypt(b"payload", context=b"ctx")
    body = token.split(".", 2)[2]
    sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    assert AESGCM(keys[0][1]).decrypt(nonce, ciphertext, b"ctx") == b"payload"


def test_any_key_of_the_ring_decrypts_and_the_first_encrypts():
    old, new = ring("old")[0], ring("new")[0]
    with override_settings(EMAIL_ENCRYPTION_KEYS=(old,)):
        before = email_encrypt("a@example.com")
    with override_settings(EMAIL_ENCRYPTION_KEYS=(new, old)):
        assert email_decrypt(before) == "a@example.com"
        assert token_key_id(email_encrypt("a@example.com")) == "new"
    with override_settings(EMAIL_ENCRYPTION_KEYS=(new,)):
        with pytest.raises(DecryptionError, match="no key 'old'"):
            email_decrypt(before)


def test_a_token_of_another_context_or_altered_does_not_decrypt():
    token = encrypt(b'["a@example.com"]', context=INGEST_BATCH_CONTEXT)
    with pytest.raises(DecryptionError, match="does not authenticate"):
        decrypt(token, context=EMAIL_CONTEXT)
    body = token.split(".", 2)[2]
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptionError, match="does not authenticate"):
        decrypt(token.rsplit(".", 1)[0] + "." + flipped, context=INGEST_BATCH_CONTEXT)


@pytest.mark.parametrize("token", ["", "plain@example.com", "v2.k1.AAAA", "v1.k1.!!", "v1.k1.AA"])
def test_what_is_not_a_token_is_refused_without_its_text(token):
    with pytest.raises(DecryptionError) as refused:
        email_decrypt(token)
    assert "example.com" not in str(refused.value)
