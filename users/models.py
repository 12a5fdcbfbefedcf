"""The user, as imported from CSV files or created through the API."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Concat, Upper

from users.fields import EncryptedEmailField


def _trigram_index(expression, name: str) -> GinIndex:
    # Django's icontains is `UPPER(col::text) LIKE UPPER(%s)`: only an index on that same
    # UPPER() expression serves it (a plain trigram index on the column is never used).
    return GinIndex(OpClass(Upper(expression), name="gin_trgm_ops"), name=name)


class User(models.Model):
    # The CSV's own id; API-created users get ids from a sequence starting at
    # users.validation.API_ID_START (created by the initial migration), so the two never collide.
    id = models.BigIntegerField(primary_key=True)
    first_name = models.CharField(max_length=255, blank=True)
    last_name = models.CharField(max_length=255, blank=True)
    # Not unique: real exports repeat addresses across accounts. Encrypted at rest, with the
    # blind indexes below filled on every save (users.fields, users.email_index).
    email_address = EncryptedEmailField()
    created_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    merged_at = models.DateTimeField(null=True, blank=True)
    # The account this one was merged into. It may arrive later in a file or never, so it is a
    # plain column rather than a foreign key.
    parent_user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # Which ingest line last wrote this row: orders writes of the same id when batches are
    # consumed out of order (later run, then later line, wins). Null for API/admin writes.
    source_run_id = models.BigIntegerField(null=True, blank=True, editable=False)
    source_line = models.IntegerField(null=True, blank=True, editable=False)
    # The address's blind indexes (users.email_index): its exact-match digest, its trigrams'
    # buckets (NULL with substring search off) and the blind-index key they were made with.
    # Declared after email_address, whose pre_save fills them.
    email_digest = models.BinaryField(null=True, editable=False)
    email_ngrams = ArrayField(models.IntegerField(), null=True, editable=False)
    # NULL, not "": a row the encrypting migration (0008) has not reached yet.
    email_index_key = models.CharField(max_length=16, null=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["id"]
        indexes = [
            # `ordering=created_at` (keyset pages on created_at then id), and a created_at
            # window in id order, whose page's ids are read from this index alone (an
            # index-only scan, users.selectors.user_created_window_by_id).
            models.Index(fields=["created_at", "id"], name="users_created_at_id_idx"),
            # `ordering=last_name` sorts by UPPER(last_name) then id (keyset pagination), and
            # the exact `last_name` filter compares UPPER(last_name): one index serves both, so
            # a last name is one range scan under every ordering (users.filters). It holds both
            # names too, so a `name` substring is checked along it without reading the table
            # (an index-only walk for a page's ids, users.selectors.user_name_walk).
            models.Index(
                Upper("last_name"),
                "id",
                include=["first_name", "last_name"],
                name="users_last_name_names_idx",
            ),
            # An exact last name of the deleted (or of the merged) users by creation time: one
            # range of these, in the page's order. Partial: only the few percent of users
            # deleted or merged are indexed (and pay for it on ingest), where a full index
            # would be paid by every row; without them PostgreSQL read every user of the last
            # name (23k Smiths at 5M users) and sorted them, or walked created_at filtering.
            models.Index(
                Upper("last_name"),
                "created_at",
                "id",
                name="users_deleted_name_created_idx",
                condition=Q(deleted_at__isnull=False),
            ),
            models.Index(
                Upper("last_name"),
                "created_at",
                "id",
                name="users_merged_name_created_idx",
                condition=Q(merged_at__isnull=False),
            ),
            # The email filters, on the blind indexes (users.email_index): `email_address=` by
            # digest, `email=` by the buckets of its trigrams (array containment, GIN).
            models.Index(fields=["email_digest"], name="users_email_digest_idx"),
            GinIndex(fields=["email_ngrams"], name="users_email_ngrams_gin"),
            # The `name` substring filter (users.filters.UserFilter; the initial migration adds
            # pg_trgm): a substring of either name is a substring of "first last", so one
            # trigram index serves it (each GIN index costs every ingested row dearly).
            _trigram_index(Concat("first_name", Value(" "), "last_name"), "users_full_name_trgm"),
            # The exact `first_name` filter uses users_full_name_trgm too (users.filters): a
            # b-tree of its own would cost every ingested row.
        ]

    def __str__(self) -> str:
        # No address: this text is what the admin's history stores and its messages show.
        return f"{self.first_name} {self.last_name} (#{self.id})"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_merged(self) -> bool:
        return self.merged_at is not None


# A block of user ids: ids >> USER_ID_BLOCK_BITS (1,024 ids each), as UserCreatedSpan keeps them.
USER_ID_BLOCK_BITS = 10


class UserCreatedSpan(models.Model):
    """The earliest and the latest creation time among the users of one block of ids (`block`:
    id >> USER_ID_BLOCK_BITS). Kept by a trigger on users_user (migration 0011) that widens a
    block's span on every insert and update, in one statement per write statement; never
    narrowed, so a deleted or changed user may leave a span wider than its users: still a
    true bound. A created_at window listed in id order reads only the ids of the blocks it
    overlaps (users.selectors.user_created_window_by_id)."""

    block = models.BigIntegerField(primary_key=True)
    low = models.DateTimeField()
    high = models.DateTimeField()

    def __str__(self) -> str:
        return f"ids block {self.block}: created {self.low:%Y-%m-%d} to {self.high:%Y-%m-%d}"


class StaleCacheEntry(models.Model):
    """A user whose Redis entry may be older than PostgreSQL: a write committed while Redis
    could not be reached. users.services.cache_repair_stale deletes these entries once Redis
    answers again (the next read then refills from PostgreSQL)."""

    user_id = models.BigIntegerField(primary_key=True)
    noted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "stale cache entries"

    def __str__(self) -> str:
        return f"user {self.user_id} (noted {self.noted_at:%Y-%m-%d %H:%M:%S})"


class PendingStreamRedaction(models.Model):
    """A deleted user whose `user.deleted` event could not reach the stream's history (its
    Redis was unreachable), so older events there still hold the user for any client resuming
    from before. users.services.stream_redactions_apply sends the event once Redis answers
    again; its tombstone then takes the user out of every replay."""

    user_id = models.BigIntegerField(primary_key=True)
    noted_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"user {self.user_id} (noted {self.noted_at:%Y-%m-%d %H:%M:%S})"


class ApiToken(models.Model):
    """An API token of an account, stored only as its SHA-256 digest (users.access).

    Tokens are 256-bit random strings, so a plain digest is enough to make a stolen database
    useless for logging in (no salt or slow hash needed, unlike passwords); the token itself is
    shown once, when it is made. Deleting the row revokes it."""

    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The token's first characters: enough to tell tokens apart in the admin, useless to log in.
    prefix = models.CharField(max_length=12, editable=False)
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.account_id}"
