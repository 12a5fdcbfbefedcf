"""Data tests feed in and read back: the users CSV header as the contract writes it, an email
address that grows when normalised, and a user's cache entry as the API would serve it."""

from __future__ import annotations

import json

# The users CSV header, written out here on purpose: tests check the code against it.
HEADER = "id,first_name,last_name,email_address,created_at,deleted_at,merged_at,parent_user_id"

# 197 characters that pass every rule as typed, but 385 once the domain is lower-cased ("İ" is
# "i̇", two code points): longer than the email column holds.
LENGTHENING_EMAIL = "ann@" + ".".join(["İ" * 63, "İ" * 63, "İ" * 62]) + ".de"


def cached(user_id: int) -> dict | None:
    """A user's entry in Redis as the API would serve it, None when not cached."""
    from users.cache import cached_user_json

    raw = cached_user_json(user_id)
    return None if raw is None else json.loads(raw)
