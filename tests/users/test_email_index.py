"""users/email_index.py: what the users table stores of an address, and the blind indexes'
rules (pure functions; the searches themselves are tested through the API in test_filters)."""

from __future__ import annotations

import secrets

import pytest
from django.test import override_settings

from users.crypto import email_decrypt, token_key_id
from users.email_index import (
    DIGEST_BYTES,
    NGRAM_BITS,
    email_digests,
    email_holds,
    email_index_values,
    email_ngram_sets,
    stored_emails_packed,
)


def ring(*ids: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((key_id, secrets.token_bytes(32)) for key_id in ids)


def test_the_stored_columns_are_a_token_and_indexes_under_the_current_keys():
    with override_settings(
        EMAIL_ENCRYPTION_KEYS=ring("e2", "e1"), EMAIL_BLIND_INDEX_KEYS=ring("b2", "b1")
    ):
        ((token, packed_digest, _, packed_key),) = stored_emails_packed(
            ["Ada.Lovelace@example.com"]
        )
        digest, ngrams, index_key = email_index_values("Ada.Lovelace@example.com")
        assert token_key_id(token) == "e2"
        assert email_decrypt(token) == "Ada.Lovelace@example.com"
        assert index_key == packed_key == "b2"
        assert len(digest) == DIGEST_BYTES and packed_digest == digest
        assert len(ngrams) == len(set(ngrams))  # distinct
        assert all(0 <= bucket < 2**NGRAM_BITS for bucket in ngrams)


def test_the_exact_digest_is_keyed_and_case_insensitive():
    keys = ring("b1")
    with override_settings(EMAIL_BLIND_INDEX_KEYS=keys):
        (digest,) = email_digests("Ada@Example.COM")
        assert email_digests(" ada@example.com ") == [digest]
        assert email_digests("ADA@EXAMPLE.COM") == [digest]
        assert email_digests("ada@example.org") != [digest]
    with override_settings(EMAIL_BLIND_INDEX_KEYS=ring("b1")):
        assert email_digests("Ada@Example.COM") != [digest]


def test_every_key_of_the_ring_is_searched_the_current_first():
    new, old = ring("new", "old")
    with override_settings(EMAIL_BLIND_INDEX_KEYS=(old,)):
        before = email_index_values("a.b@example.com")
    with override_settings(EMAIL_BLIND_INDEX_KEYS=(new, old)):
        digests = email_digests("a.b@example.com")
        sets = email_ngram_sets("b@exa")
        assert digests[1] == before[0] and digests[0] != before[0]
        assert set(sets[1]) <= set(before[1])


@pytest.mark.parametrize(
    ("address", "text", "holds"),
    [
        ("Ada.Lovelace@example.com", "LOVE", True),
        ("Ada.Lovelace@example.com", "ace@Exa", True),
        ("Ada.Lovelace@example.com", "lace.", False),
        ("xabc.bcd@example.com", "abcd", False),  # every trigram there, not the substring
    ],
)
def test_a_substring_holds_when_its_upper_case_is_in_the_address(address, text, holds):
    assert email_holds(address, text) is holds


def test_an_address_holding_a_substring_holds_all_its_buckets():
    with override_settings(EMAIL_BLIND_INDEX_KEYS=ring("b1")):
        _, ngrams, _ = email_index_values("Ada.Lovelace@example.com")
        for text in ("ada", "LOVELACE@", "e@example.c", "ace@exa"):
            (buckets,) = email_ngram_sets(text)
            assert set(buckets) <= set(ngrams), text
        # The false candidate the check exists for: all of its buckets, not the substring.
        _, false_ngrams, _ = email_index_values("xabc.bcd@example.com")
        assert set(email_ngram_sets("abcd")[0]) <= set(false_ngrams)
        assert email_ngram_sets("ab") == []


def test_with_substring_search_off_no_ngrams_are_stored():
    with override_settings(EMAIL_BLIND_INDEX_KEYS=ring("b1"), EMAIL_SUBSTRING_SEARCH=False):
        assert email_index_values("a@example.com")[1] is None


@pytest.mark.django_db
def test_the_copys_packed_columns_are_what_postgresql_reads_back():
    from django.db import connection

    from users.email_index import stored_emails_packed

    addresses = ["Ada.Lovelace@example.com", "ab@x.io", "a@", "z@example.com"]
    with override_settings(EMAIL_BLIND_INDEX_KEYS=ring("b1")):
        packed = stored_emails_packed(addresses)
        expected = [email_index_values(address) for address in addresses]
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE packed (token text, digest bytea, a int4[], k text)")
        with cursor.cursor.copy("COPY packed FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "bytea", "bytea", "text"])
            for row in packed:
                copy.write_row(row)
        cursor.execute("SELECT token, digest, a, k FROM packed")
        stored = cursor.fetchall()
    for address, (token, digest, ngrams, key_id), (want_digest, want_ngrams, want_key) in zip(
        addresses, stored, expected, strict=True
    ):
        assert email_decrypt(token) == address
        assert (bytes(digest), sorted(ngrams), key_id) == (
            want_digest,
            sorted(want_ngrams),
            want_key,
        )
    assert stored[2][2] == []  # "A@": no trigram


def test_with_substring_search_off_the_copy_stores_no_buckets():
    from users.email_index import stored_emails_packed

    with override_settings(EMAIL_BLIND_INDEX_KEYS=ring("b1"), EMAIL_SUBSTRING_SEARCH=False):
        assert stored_emails_packed(["a@example.com"])[0][2] is None
