"""Rotating the email keys online (`manage.py rotate_email_keys`, users.email_rotation) and the
migrations that encrypt a plaintext table and decrypt it again (users 0007-0009)."""

from __future__ import annotations

import secrets
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from ingest.models import IngestBatch, IngestRun
from ingest.services import batch_payload
from users import email_rotation
from users.crypto import INGEST_BATCH_CONTEXT, decrypt, token_key_id
from users.email_rotation import emails_left_under_other_keys, emails_rewrite_batch
from users.models import User


def key() -> bytes:
    return secrets.token_bytes(32)


OLD, NEW = ("old", key()), ("new", key())
OLD_INDEX, NEW_INDEX = ("bold", key()), ("bnew", key())


def stored() -> dict[int, tuple[str, str]]:
    """Each user's stored token key and index key."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, email_address, email_index_key FROM users_user ORDER BY id")
        return {row[0]: (token_key_id(row[1]), row[2]) for row in cursor.fetchall()}


def rotate(*args: str) -> str:
    out = StringIO()
    call_command("rotate_email_keys", "--no-progress", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def old_users(user_factory):
    with override_settings(EMAIL_ENCRYPTION_KEYS=(OLD,), EMAIL_BLIND_INDEX_KEYS=(OLD_INDEX,)):
        return [user_factory(email_address=f"person{n}@example.com") for n in range(7)]


def test_rotation_rewrites_every_row_and_says_the_old_keys_can_go(reader_client, old_users):
    with override_settings(
        EMAIL_ENCRYPTION_KEYS=(NEW, OLD), EMAIL_BLIND_INDEX_KEYS=(NEW_INDEX, OLD_INDEX)
    ):
        # Before: every search still finds the rows indexed under the old key.
        assert len(reader_client.get("/users?email=person").json()["results"]) == 7
        output = rotate("--batch-size", "3")
        assert "users: 7 examined, 7 rewritten" in output
        assert "every stored address is under the current keys" in output
        assert "EMAIL_ENCRYPTION_KEYS: old can be removed once no ingest message" in output
        assert "EMAIL_BLIND_INDEX_KEY: bold can be removed now" in output
        assert "users: 7 examined, 0 rewritten" in rotate()  # run again: nothing to do
    assert set(stored().values()) == {("new", "bnew")}
    with override_settings(EMAIL_ENCRYPTION_KEYS=(NEW,), EMAIL_BLIND_INDEX_KEYS=(NEW_INDEX,)):
        results = reader_client.get("/users?email=person3").json()["results"]
        assert [u["email_address"] for u in results] == ["person3@example.com"]
        exact = reader_client.get("/users?email_address=person4%40example.com").json()
        assert [u["id"] for u in exact["results"]] == [old_users[4].id]


def test_an_interrupted_rotation_resumes_where_it_stopped(old_users, monkeypatch):
    calls = []
    real = email_rotation.emails_rewrite_batch

    def interrupted(**kwargs):
        calls.append(kwargs["after_id"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(**kwargs)

    with override_settings(EMAIL_ENCRYPTION_KEYS=(NEW, OLD), EMAIL_BLIND_INDEX_KEYS=(NEW_INDEX,)):
        monkeypatch.setattr(email_rotation, "emails_rewrite_batch", interrupted)
        with pytest.raises(CommandError, match=r"stopped after user id (\d+): run again"):
            rotate("--batch-size", "3")
        halfway = sorted(stored().items())
        assert [keys for _, keys in halfway[:3]] == [("new", "bnew")] * 3
        assert all(keys == ("old", "bold") for _, keys in halfway[3:])
        assert emails_left_under_other_keys() == {"old": 4, "index:bold": 4}
        monkeypatch.setattr(email_rotation, "emails_rewrite_batch", real)
        assert "4 rewritten" in rotate("--batch-size", "3")
    assert set(stored().values()) == {("new", "bnew")}


def test_a_write_during_a_batch_wins(old_users, monkeypatch):
    target = old_users[1]
    real = email_rotation.email_decrypt

    def decrypt_while_a_write_lands(token):
        if not getattr(decrypt_while_a_write_lands, "done", False):
            decrypt_while_a_write_lands.done = True
            User.objects.filter(id=target.id).update(email_address="changed@example.com")
        return real(token)

    with override_settings(EMAIL_ENCRYPTION_KEYS=(NEW, OLD), EMAIL_BLIND_INDEX_KEYS=(NEW_INDEX,)):
        monkeypatch.setattr(email_rotation, "email_decrypt", decrypt_while_a_write_lands)
        batch = emails_rewrite_batch(after_id=0, size=100)
        assert batch.rewritten == 6  # the row written meanwhile kept its new value
        assert User.objects.get(id=target.id).email_address == "changed@example.com"


def test_failed_batches_are_re_encrypted_too(old_users, db):
    run = IngestRun.objects.create(file_name="f.csv", file_size=1, checksum="x", batch_size=1)
    rows = [[2, "9", "Ann", "Lee", "kept@example.com", "1600000000000", "-1", "-1", "-1"]]
    with override_settings(EMAIL_ENCRYPTION_KEYS=(OLD,)):
        payload = batch_payload(rows, [])
    IngestBatch.objects.create(run=run, number=1, status=IngestBatch.Status.FAILED, payload=payload)
    with override_settings(EMAIL_ENCRYPTION_KEYS=(NEW, OLD), EMAIL_BLIND_INDEX_KEYS=(NEW_INDEX,)):
        assert "failed ingest batches: 1 re-encrypted" in rotate()
        token = IngestBatch.objects.get(run=run).payload["emails"]
        assert token_key_id(token) == "new"
        assert b"kept@example.com" in decrypt(token, context=INGEST_BATCH_CONTEXT)


def test_check_only_counts(old_users):
    with override_settings(EMAIL_ENCRYPTION_KEYS=(NEW, OLD), EMAIL_BLIND_INDEX_KEYS=(OLD_INDEX,)):
        output = rotate("--check")
    assert "left under other keys: old: 7" in output
    assert set(stored().values()) == {("old", "bold")}


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_a_plaintext_table_and_the_way_back_decrypts_it(user_factory):
    from django.db.migrations.executor import MigrationExecutor

    users = [user_factory(email_address=f"Plain{n}@Example.com") for n in range(5)]

    def migrate(target: str) -> None:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([("users", target)])

    def raw() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT email_address FROM users_user ORDER BY id")
            return [row[0] for row in cursor.fetchall()]

    # Back to the newest migration after (0010 and on too), as every later test expects.
    (latest,) = [
        name
        for app, name in MigrationExecutor(connection).loader.graph.leaf_nodes()
        if app == "users"
    ]
    try:
        migrate("0006_created_at_id_index")  # the way back: every address decrypted
        assert raw() == [u.email_address for u in users]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'users_user' "
                "AND indexname LIKE 'users_email%%'"
            )
            assert [row[0] for row in cursor.fetchall()] == ["users_email_trgm"]
    finally:
        migrate(latest)
    tokens = raw()
    assert all(token.startswith("v1.") and "@" not in token for token in tokens)
    assert [User.objects.get(id=u.id).email_address for u in users] == [
        u.email_address for u in users
    ]
    assert emails_left_under_other_keys() == {}
