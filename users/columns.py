"""The user's own columns, declared once.

`UserRow` lists them in their one order — the CSV header's, the API's and the cache's — with
their Python types. Everything that lists the columns derives from it: the CSV parser
(ingest.parsing), the JSON writers (users.payloads), the COPY column list and types and the
merge's SET list (users.services), the serializer and the admin. The model (users.models.User)
declares the same columns as database fields, and tests/users/test_columns.py checks the two
agree. Adding a column: the model, a migration, this tuple, and the places whose rules truly
differ (how the CSV value is parsed and validated, how the API filters it).

Pure Python, no Django: the CSV parser imports it.
"""

from datetime import datetime
from typing import NamedTuple, get_type_hints


class UserRow(NamedTuple):
    """A validated, normalised user (a tuple: ingest workers make one per row, cheaply)."""

    id: int
    first_name: str
    last_name: str
    email_address: str
    created_at: datetime
    deleted_at: datetime | None
    merged_at: datetime | None
    parent_user_id: int | None


USER_COLUMNS: tuple[str, ...] = UserRow._fields
COLUMN_TYPES: dict[str, type] = {
    name: next((t for t in getattr(hint, "__args__", (hint,)) if t is not type(None)), hint)
    for name, hint in get_type_hints(UserRow).items()
}
TIMESTAMP_COLUMNS = frozenset(name for name, kind in COLUMN_TYPES.items() if kind is datetime)
# Which ingest line last wrote a row (users.models.User): stored with every imported row.
SOURCE_COLUMNS = ("source_run_id", "source_line")
