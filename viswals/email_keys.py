"""The keys that protect email addresses, read from the environment and checked when settings load
(so in every process), the way viswals/secret_key.py checks the secret key.

- `EMAIL_ENCRYPTION_KEYS`: the keyring of AES-256-GCM keys, `id:key,id2:key2`, the current key
  first (it encrypts; every key of the ring decrypts). A key is 32 random bytes in base64
  (standard or URL-safe alphabet, padding optional); an id is 1-16 letters, digits, `_` or `-`
  and is stored with every ciphertext (users/crypto.py).
- `EMAIL_BLIND_INDEX_KEY`: the HMAC-SHA256 key of the blind indexes (users/email_index.py),
  32 or more random bytes in base64; never one of the encryption keys. One bare key (its id is
  `default`), or a ring `id:key,id2:key2` like the encryption keys while the blind index is
  rebuilt under a new key (`manage.py rotate_email_keys`): the first key indexes what is
  written, every key of the ring is searched.

With debug off settings.py refuses to start on a keyring or a blind-index key that is missing,
malformed, shorter than 32 bytes or published in this repository: the process stops with one
line saying why and how to make a key, never a traceback. With debug on the development keys
below (published, so refused in production) stand in for keys that are not set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

KEY_BYTES = 32  # AES-256
MIN_BLIND_INDEX_KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}\Z")
# secrets.token_urlsafe(32): 32 random bytes in URL-safe base64.
HOW_TO_MAKE_ONE = (
    "make a key with: python -c 'import secrets; print(secrets.token_urlsafe(32))' "
    "(EMAIL_ENCRYPTION_KEYS=<id>:<key>; or set DJANGO_DEBUG=true for local development)"
)


def _development_key(purpose: str) -> str:
    digest = hashlib.sha256(f"viswals development {purpose}, never for real data".encode())
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


# Debug on only: every process of a checkout agrees on them without any set-up, and anybody who
# reads this file knows them, so settings refuse them with debug off.
DEVELOPMENT_EMAIL_ENCRYPTION_KEYS = f"dev:{_development_key('email encryption key')}"
DEVELOPMENT_EMAIL_BLIND_INDEX_KEY = _development_key("email blind index key")

# SHA-256 of every key (its bytes) this repository carries or has carried in a usable form.
PUBLISHED_KEY_DIGESTS = frozenset(
    hashlib.sha256(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))).hexdigest()
    for key in (
        DEVELOPMENT_EMAIL_ENCRYPTION_KEYS.partition(":")[2],
        DEVELOPMENT_EMAIL_BLIND_INDEX_KEY,
    )
)

Keyring = tuple[tuple[str, bytes], ...]


class EmailKeyError(ValueError):
    """A key setting that cannot be used; its message is one line and never holds a key."""


def decode_key(text: str) -> bytes:
    """A key's bytes from base64 (either alphabet, padding optional); EmailKeyError if not."""
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise EmailKeyError("is not base64") from None


# The id of a blind-index key given bare (not as a ring).
BARE_BLIND_INDEX_KEY_ID = "default"


def parse_keyring(text: str, *, setting: str = "EMAIL_ENCRYPTION_KEYS") -> Keyring:
    """The (id, key) pairs of a keyring value (`id:key,id2:key2`), the current key first; the
    keys' lengths are checked by the caller."""
    if not text.strip():
        raise EmailKeyError(f"{setting} is not set")
    ring: list[tuple[str, bytes]] = []
    for position, entry in enumerate(text.split(","), start=1):
        key_id, colon, key_text = entry.strip().partition(":")
        where = f"{setting} entry {position}"
        if not colon or not _KEY_ID.match(key_id):
            raise EmailKeyError(f"{where} is not id:key (an id of 1-16 letters, digits, _ or -)")
        if any(key_id == seen for seen, _ in ring):
            raise EmailKeyError(f"{where}: the id {key_id!r} is used twice")
        try:
            key = decode_key(key_text)
        except EmailKeyError as error:
            raise EmailKeyError(f"{where} ({key_id}): the key {error}") from None
        if setting == "EMAIL_ENCRYPTION_KEYS" and len(key) != KEY_BYTES:
            raise EmailKeyError(
                f"{where} ({key_id}): the key is {len(key)} bytes, not {KEY_BYTES} (AES-256)"
            )
        ring.append((key_id, key))
    return tuple(ring)


def parse_blind_index_keys(text: str) -> Keyring:
    """The blind-index keys, the current first: one bare key (id BARE_BLIND_INDEX_KEY_ID) or a
    ring. Base64 never holds a colon, so a colon means a ring."""
    if not text.strip():
        raise EmailKeyError("EMAIL_BLIND_INDEX_KEY is not set")
    if ":" in text:
        ring = parse_keyring(text, setting="EMAIL_BLIND_INDEX_KEY")
    else:
        try:
            ring = ((BARE_BLIND_INDEX_KEY_ID, decode_key(text)),)
        except EmailKeyError as error:
            raise EmailKeyError(f"EMAIL_BLIND_INDEX_KEY {error}") from None
    for key_id, key in ring:
        if len(key) < MIN_BLIND_INDEX_KEY_BYTES:
            named = "" if key_id == BARE_BLIND_INDEX_KEY_ID else f" ({key_id})"
            raise EmailKeyError(
                f"EMAIL_BLIND_INDEX_KEY{named} is {len(key)} bytes, "
                f"shorter than {MIN_BLIND_INDEX_KEY_BYTES}"
            )
    return ring


def is_published(key: bytes) -> bool:
    return hashlib.sha256(key).hexdigest() in PUBLISHED_KEY_DIGESTS


def email_keys_load(
    *, keyring_text: str, blind_index_text: str, debug: bool
) -> tuple[Keyring, Keyring]:
    """Both settings parsed and checked, as keyrings; EmailKeyError (one line, the remedy
    included) if one cannot be used. Published keys are refused only with debug off."""
    try:
        ring = parse_keyring(keyring_text)
        blind_index_keys = parse_blind_index_keys(blind_index_text)
        encryption_keys = {key for _, key in ring}
        if any(key in encryption_keys for _, key in blind_index_keys):
            raise EmailKeyError("EMAIL_BLIND_INDEX_KEY is also a key of EMAIL_ENCRYPTION_KEYS")
        if not debug:
            for key_id, key in ring:
                if is_published(key):
                    raise EmailKeyError(
                        f"EMAIL_ENCRYPTION_KEYS ({key_id}) is a key published in the viswals "
                        "repository"
                    )
            if any(is_published(key) for _, key in blind_index_keys):
                raise EmailKeyError(
                    "EMAIL_BLIND_INDEX_KEY is a key published in the viswals repository"
                )
    except EmailKeyError as error:
        suffix = " (required with DJANGO_DEBUG off)" if not debug else ""
        raise EmailKeyError(f"{error}{suffix}; {HOW_TO_MAKE_ONE}") from None
    return ring, blind_index_keys
