"""The email address encrypted at rest, step 2 of 3: every plaintext address encrypted under
the current key, with its blind indexes, in batches of BATCH users, each its own transaction
(users.email_rotation). Not atomic: on a large table the service keeps serving meanwhile (a
plaintext row is shown as it is until its batch), and an interrupted run resumes where it
stopped. Backwards (`manage.py migrate users 0006`, docs/operations.md): every address
decrypted again, the same way."""

import sys

from django.db import migrations

from users.email_rotation import emails_rewrite

BATCH = 5000
REPORT_EVERY = 100_000


def _rewrite(*, decrypt: bool) -> None:
    examined = rewritten = reported = 0
    for batch in emails_rewrite(size=BATCH, decrypt=decrypt):
        examined += batch.examined
        rewritten += batch.rewritten
        if examined - reported >= REPORT_EVERY:
            reported = examined
            verb = "decrypted" if decrypt else "encrypted"
            sys.stdout.write(f"\n  users: {examined:,} examined, {rewritten:,} {verb}")
            sys.stdout.flush()


def encrypt(apps, schema_editor):
    _rewrite(decrypt=False)


def decrypt(apps, schema_editor):
    _rewrite(decrypt=True)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("users", "0007_email_encrypted_columns"),
    ]

    operations = [migrations.RunPython(encrypt, decrypt, elidable=False)]
