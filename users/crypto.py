"""Email addresses encrypted at rest (docs/security.md, "Email addresses at rest"); the keyed
blind indexes that keep them searchable are users/email_index.py.

Encryption is AES-256-GCM (`cryptography`'s AESGCM: authenticated, a random 96-bit nonce per
message). A ciphertext travels as one ASCII token, `v1.<key id>.<nonce + ciphertext + tag in
URL-safe base64, unpadded>`: the key id says which key of the ring (settings.
EMAIL_ENCRYPTION_KEYS, the current key first) decrypts it, so keys can rotate while older tokens
stay readable. Every token is bound to a context (GCM's associated data: what the plaintext is,
`EMAIL_CONTEXT`, `INGEST_BATCH_CONTEXT`): a token moved to another use fails to decrypt.

Keys are looked up in settings at call time, never at import.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings

from users.validation import FieldError, clean_email

TOKEN_VERSION = "v1"
NONCE_BYTES = 12  # GCM's standard nonce; random per message (2**32 messages per key at most)
# Associated data of each kind of plaintext.
EMAIL_CONTEXT = b"viswals:users.email_address"
INGEST_BATCH_CONTEXT = b"viswals:ingest.batch.email_addresses"


class DecryptionError(Exception):
    """A token that is not ours, names a key the ring does not hold, or does not authenticate
    (altered, or of another context). The message never holds the plaintext or a key."""


class _Ring:
    def __init__(self, keys: tuple[tuple[str, bytes], ...]) -> None:
        self.current_id, current = keys[0]
        self.current = AESGCM(current)
        self.by_id = {key_id: AESGCM(key) for key_id, key in keys}


@functools.lru_cache(maxsize=4)
def _ring(keys: tuple[tuple[str, bytes], ...]) -> _Ring:
    return _Ring(keys)


def _keyring() -> _Ring:
    return _ring(settings.EMAIL_ENCRYPTION_KEYS)


def encrypt(plaintext: bytes, *, context: bytes) -> str:
    """A token of `plaintext` under the ring's current key, bound to `context`."""
    ring = _keyring()
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + ring.current.encrypt(nonce, plaintext, context)
    body = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")
    return f"{TOKEN_VERSION}.{ring.current_id}.{body}"


def encrypt_many(plaintexts: list[bytes], *, context: bytes) -> list[str]:
    """`encrypt` of each plaintext, the ring looked up and the nonces drawn once for all (the
    ingest COPY: one token per row)."""
    ring = _keyring()
    seal, prefix = ring.current.encrypt, f"{TOKEN_VERSION}.{ring.current_id}."
    nonces = os.urandom(NONCE_BYTES * len(plaintexts))
    encode = base64.urlsafe_b64encode
    tokens = []
    for at, plaintext in enumerate(plaintexts):
        nonce = nonces[at * NONCE_BYTES : (at + 1) * NONCE_BYTES]
        body = encode(nonce + seal(nonce, plaintext, context)).rstrip(b"=").decode("ascii")
        tokens.append(prefix + body)
    return tokens


def decrypt(token: str, *, context: bytes) -> bytes:
    """The plaintext of a token made by `encrypt` with any key of the ring; DecryptionError."""
    version, key_id, body = _token_parts(token)
    cipher = _keyring().by_id.get(key_id)
    if cipher is None:
        raise DecryptionError(f"no key {key_id!r} in EMAIL_ENCRYPTION_KEYS")
    try:
        sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError("the token's body is not base64") from None
    if len(sealed) < NONCE_BYTES + 16:
        raise DecryptionError("the token is too short")
    try:
        return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
    except InvalidTag:
        raise DecryptionError(f"the token does not authenticate under key {key_id!r}") from None


def token_key_id(token: str) -> str:
    """The id of the key a token was made with (which tokens a rotation must re-encrypt)."""
    return _token_parts(token)[1]


def _token_parts(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str):
        raise DecryptionError("not a token")
    parts = token.split(".", 2)
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise DecryptionError(f"not a {TOKEN_VERSION} token")
    return parts[0], parts[1], parts[2]


def email_encrypt(address: str) -> str:
    """An address as a token (the plaintext is the address as given, not normalised)."""
    return encrypt(address.encode("utf-8", "surrogatepass"), context=EMAIL_CONTEXT)


def email_decrypt(token: str) -> str:
    """The address an `email_encrypt` token holds; DecryptionError."""
    return decrypt(token, context=EMAIL_CONTEXT).decode("utf-8", "surrogatepass")


def email_normal_form(address: str) -> str:
    """The address as the users table stores it (clean_email: trimmed, domain lower-cased); a
    value clean_email refuses is kept as given (no stored address can equal it)."""
    try:
        return clean_email(address)
    except FieldError:
        return address


def is_token(value: str) -> bool:
    """Whether a stored value is a token rather than a plaintext address (every address holds
    an "@", which base64url never does): rows written before the table was encrypted."""
    return value.startswith(f"{TOKEN_VERSION}.") and "@" not in value
