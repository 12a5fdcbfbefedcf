"""`manage.py rotate_email_keys`: every stored email address under the current encryption key,
and its blind indexes under the current blind-index key, rewritten in batches while the service
serves (users.email_rotation); then the other stores of tokens (failed ingest batches), and what
is left under older keys, so the operator knows when an old key may leave its ring.

Put the new key first in EMAIL_ENCRYPTION_KEYS (or EMAIL_BLIND_INDEX_KEY), keep the old one
after it, restart every process, then run this (docs/operations.md, "Rotating the email keys").
Interrupted, it resumes by running it again: rows already rewritten are skipped.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone
from tqdm import tqdm

from users.crypto import DecryptionError
from users.email_rotation import (
    emails_left_under_other_keys,
    emails_rewrite,
    token_holders,
)
from users.selectors import user_count


class Command(BaseCommand):
    help = (
        "Re-encrypt stored email addresses under the current key of EMAIL_ENCRYPTION_KEYS and "
        "rebuild their blind indexes under the current EMAIL_BLIND_INDEX_KEY, in batches, "
        "online; then say whether the older keys can be removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=2000, help="users per transaction")
        parser.add_argument(
            "--from-id", type=int, default=0, help="resume after this user id (printed on stop)"
        )
        parser.add_argument(
            "--check", action="store_true", help="only count what is left under older keys"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, batch_size: int, from_id: int, check: bool, no_progress: bool,
               **options):  # fmt: skip
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        encryption_id = settings.EMAIL_ENCRYPTION_KEYS[0][0]
        index_id = settings.EMAIL_BLIND_INDEX_KEYS[0][0]
        self.stdout.write(
            f"current keys: encryption {encryption_id!r}, blind index {index_id!r}"
            f"{'' if settings.EMAIL_SUBSTRING_SEARCH else ' (substring search off: no n-grams)'}"
        )
        started = timezone.now()
        if not check:
            self._rewrite(from_id=from_id, batch_size=batch_size, progress=not no_progress)
        try:
            left = emails_left_under_other_keys()
        except DatabaseError as error:
            raise CommandError(f"could not count what is left: {error}".splitlines()[0]) from None
        self._report(left=left, started=started, rewrote=not check)

    def _rewrite(self, *, from_id: int, batch_size: int, progress: bool) -> None:
        total = user_count()[0]
        examined = rewritten = 0
        resume_after = from_id
        began = time.monotonic()
        bar = tqdm(total=total, unit="users", disable=not progress, file=self.stderr._out)
        try:
            for batch in emails_rewrite(after_id=from_id, size=batch_size):
                examined += batch.examined
                rewritten += batch.rewritten
                bar.update(batch.examined)
                if batch.last_id is not None:
                    resume_after = batch.last_id
        except KeyboardInterrupt:
            bar.close()
            raise CommandError(
                f"stopped after user id {resume_after}: run again to resume "
                f"(or with --from-id {resume_after})"
            ) from None
        except (DatabaseError, DecryptionError) as error:
            bar.close()
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CommandError(
                f"stopped after user id {resume_after}: {reason}; run again to resume "
                f"(or with --from-id {resume_after})"
            ) from None
        bar.close()
        seconds = time.monotonic() - began
        self.stdout.write(
            f"users: {examined:,} examined, {rewritten:,} rewritten in {seconds:.1f} s"
        )
        for holder in token_holders:
            what, holder_rewritten, holder_left = holder()
            self.stdout.write(
                f"{what}: {holder_rewritten:,} re-encrypted"
                + (f", {holder_left:,} under keys the ring no longer holds" if holder_left else "")
            )

    def _report(self, *, left: dict[str, int], started, rewrote: bool) -> None:
        if left:
            listed = ", ".join(f"{key}: {count:,}" for key, count in sorted(left.items()))
            self.stdout.write(self.style.WARNING(f"left under other keys: {listed}"))
            if rewrote:
                self.stdout.write(
                    "a process may still write with an older key first in its ring (restart "
                    "every web and worker process with the new ring), then run again"
                )
            return
        older = [key_id for key_id, _ in settings.EMAIL_ENCRYPTION_KEYS[1:]]
        older_index = [key_id for key_id, _ in settings.EMAIL_BLIND_INDEX_KEYS[1:]]
        self.stdout.write(self.style.SUCCESS("every stored address is under the current keys"))
        if older or older_index:
            since = started.strftime("%Y-%m-%d %H:%M:%S %Z")
            if older:
                self.stdout.write(
                    f"EMAIL_ENCRYPTION_KEYS: {', '.join(older)} can be removed once no ingest "
                    f"message published before {since} is still queued, and kept as long as "
                    "a backup made before then may be restored"
                )
            if older_index:
                self.stdout.write(
                    f"EMAIL_BLIND_INDEX_KEY: {', '.join(older_index)} can be removed now (searches "
                    "ask every key of the ring until then)"
                )
