"""What the users table stores of an email address, and how it is searched without the plaintext
(docs/security.md, "Email addresses at rest").

A user row holds, for its address:
- `email_address`: the address encrypted (users.crypto.email_encrypt; users.fields);
- `email_digest`: the exact-match blind index, HMAC-SHA256 of the address's search form,
  truncated to DIGEST_BYTES, under the current blind-index key;
- `email_ngrams`: the substring index, the distinct trigrams of the search form, each an
  HMAC-SHA256 under the same key truncated to NGRAM_BITS (a bucket); NULL when substring
  search is off (settings.EMAIL_SUBSTRING_SEARCH);
- `email_index_key`: the id of the blind-index key both were made with, so a rotation knows
  which rows to rebuild.

The search form is the address as stored (users.validation.clean_email's normal form) upper-
cased with Python's str.upper: the `email_address` (exact) and `email` (substring) filters are
case-insensitive, as they were when PostgreSQL compared UPPER() of the plaintext.

A search asks every key of the blind-index ring (the current one first), so results stay
whole while `rotate_email_keys` rebuilds rows under a new key. A substring's trigrams may all
be in an address that does not hold the substring ("ABCD" against "xabc.bcd@"), or share a
bucket with another trigram: the database returns candidates, which are decrypted and checked
(email_holds) before they are shown (users.selectors.user_rows_rechecked).
"""

from __future__ import annotations

import hmac
import struct

from django.conf import settings

from users.crypto import EMAIL_CONTEXT, email_normal_form, encrypt_many

# 128 bits: no two addresses share a digest in practice, so the exact filter needs no check.
DIGEST_BYTES = 16
NGRAM_CHARS = 3
# 2**24 buckets, a few times more than the trigrams real addresses hold, so a bucket seldom
# holds two of them (fewer false candidates); fewer bits would make every bucket hold several
# trigrams and hide their frequencies better, at the price of more candidates to decrypt.
NGRAM_BITS = 24
_NGRAM_BYTES = NGRAM_BITS // 8
# Each HMAC input starts with what it indexes, so one key serves both without a digest of one
# kind ever equalling one of the other.
_EXACT_PREFIX = b"email-exact\x00"
_NGRAM_PREFIX = b"email-ngram\x00"
# Trigram -> bucket, and "@domain" -> its trigrams' buckets, per key: addresses repeat a few
# tens of thousands of trigrams and few domains, and an HMAC costs ~2 µs, 25 per address.
# Bounded: cleared when full.
_BUCKET_CACHE_MAX = 1 << 17
_buckets: dict[bytes, dict] = {}


# The columns beside `email_address` that hold its blind indexes (email_index_values' order).
EMAIL_INDEX_COLUMNS = ("email_digest", "email_ngrams", "email_index_key")


def search_form(text: str) -> str:
    """What both indexes and the check compare: upper-cased."""
    return text.upper()


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(key: bytes, stored: str) -> bytes:
    """The exact-match digest of an address in its stored form."""
    message = _EXACT_PREFIX + _encoded(search_form(stored))
    return hmac.digest(key, message, "sha256")[:DIGEST_BYTES]


def _cache(store: dict[bytes, dict], key: bytes) -> dict:
    cache = store.get(key)
    if cache is None or len(cache) >= _BUCKET_CACHE_MAX:
        cache = store[key] = {}
    return cache


def _bucket(key: bytes, trigram: str) -> int:
    digest = hmac.digest(key, _NGRAM_PREFIX + _encoded(trigram), "sha256")
    return int.from_bytes(digest[:_NGRAM_BYTES], "big")


def _trigram_values(cache: dict, form: str, value_of) -> set | frozenset:
    """The distinct values (`value_of(trigram)`, kept in `cache`) of `form`'s trigrams.

    An address's trigrams are those of its local part up to the domain's first character, and
    those of "@domain", which few domains share among millions of users: those are kept per
    domain, so a row hashes (or looks up) only its local part's."""
    local, at, domain = form.rpartition("@")
    if at and domain:
        domain_values = cache.get(at + domain)
        if domain_values is None:
            domain_values = cache[at + domain] = frozenset(_values_of(cache, at + domain, value_of))
        return domain_values.union(_values_of(cache, local + at + domain[0], value_of))
    return set(_values_of(cache, form, value_of))


def _values_of(cache: dict, form: str, value_of) -> list:
    trigrams = [form[at : at + NGRAM_CHARS] for at in range(len(form) - NGRAM_CHARS + 1)]
    try:  # the common case, every trigram seen before
        return [cache[trigram] for trigram in trigrams]
    except KeyError:
        pass
    for trigram in trigrams:
        if trigram not in cache:
            cache[trigram] = value_of(trigram)
    return [cache[trigram] for trigram in trigrams]


def _ngrams(key: bytes, form: str) -> list[int]:
    """The distinct buckets of `form`'s trigrams under `key` (in no order: GIN needs none)."""
    return list(_trigram_values(_cache(_buckets, key), form, lambda t: _bucket(key, t)))


# The ingest COPY's form of the buckets: each trigram's bucket as an int4[] element in
# PostgreSQL's binary array format (its length, 4, then its value), per key; and per "@domain".
_elements: dict[bytes, dict] = {}
_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has nulls, element type, count, lower bound
_EMPTY_ARRAY = struct.pack(">iii", 0, 0, 23)
_ELEMENT = struct.Struct(">ii")


def _packed_ngrams(key: bytes, form: str) -> bytes:
    """The distinct buckets of `form`'s trigrams as a binary int4[] (what _ngrams gives, packed
    as PostgreSQL's array_send writes it)."""
    elements = _trigram_values(
        _cache(_elements, key), form, lambda t: _ELEMENT.pack(4, _bucket(key, t))
    )
    if not elements:
        return _EMPTY_ARRAY
    return _ARRAY_HEADER.pack(1, 0, 23, len(elements), 1) + b"".join(elements)


def stored_emails_packed(addresses: list[str]) -> list[tuple[str, bytes, bytes | None, str]]:
    """The four columns a user row holds for each address, already in its stored form
    (users.validation.clean_email, as ingest validates it): the token, the digest, the buckets
    packed as a binary int4[] (users.services' COPY) and the blind-index key's id, under the
    current keys, looked up once, with the nonces drawn once."""
    key_id, key = settings.EMAIL_BLIND_INDEX_KEYS[0]
    substrings = settings.EMAIL_SUBSTRING_SEARCH
    tokens = encrypt_many([_encoded(a) for a in addresses], context=EMAIL_CONTEXT)
    return [
        (
            token,
            _digest(key, address),
            _packed_ngrams(key, search_form(address)) if substrings else None,
            key_id,
        )
        for address, token in zip(addresses, tokens, strict=True)
    ]


def email_index_values(address: str) -> tuple[bytes, list[int] | None, str]:
    """The index columns alone for an address in any form (normalised first): what a save
    through the ORM (users.fields) and a rotation of the blind-index key store."""
    stored = email_normal_form(address)
    key_id, key = settings.EMAIL_BLIND_INDEX_KEYS[0]
    ngrams = _ngrams(key, search_form(stored)) if settings.EMAIL_SUBSTRING_SEARCH else None
    return _digest(key, stored), ngrams, key_id


def email_digests(address: str) -> list[bytes]:
    """The exact-match digests of `address` under every blind-index key: the `email_address`
    filter's values (users.selectors.user_filter_email_address)."""
    stored = email_normal_form(address)
    return [_digest(key, stored) for _, key in settings.EMAIL_BLIND_INDEX_KEYS]


def email_ngram_sets(text: str) -> list[list[int]]:
    """The buckets of `text`'s trigrams under every blind-index key: an address holding the
    substring holds all of one of these (`email_ngrams @> …`). Empty for a text shorter than a
    trigram (no index can serve it; the filters refuse it first)."""
    form = search_form(text)
    if len(form) < NGRAM_CHARS:
        return []
    return [_ngrams(key, form) for _, key in settings.EMAIL_BLIND_INDEX_KEYS]


def email_holds(address: str, text: str) -> bool:
    """Whether `address` (plaintext, as stored) holds `text`, case-insensitively: the check that
    turns the n-gram index's candidates into matches."""
    return search_form(text) in search_form(address)
