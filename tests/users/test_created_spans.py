"""The creation times of each block of user ids (users.models.UserCreatedSpan), kept by a
trigger on users_user, and a created_at window in id order narrowed by them
(users.selectors.user_created_window_by_id)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.support.pages import walk_pages
from users.columns import UserRow
from users.models import USER_ID_BLOCK_BITS, User, UserCreatedSpan
from users.services import SourcedUser, users_upsert

BLOCK = 1 << USER_ID_BLOCK_BITS


def uncovered_users() -> list[int]:
    """Users whose creation time lies outside their block's span (or with no span)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT u.id FROM users_user u LEFT JOIN {UserCreatedSpan._meta.db_table} s "
            f"ON s.block = u.id >> {USER_ID_BLOCK_BITS} "
            "WHERE s.block IS NULL OR u.created_at < s.low OR u.created_at > s.high"
        )
        return [row[0] for row in cursor.fetchall()]


def day(year: int, month: int = 1, date: int = 1) -> datetime:
    return datetime(year, month, date, tzinfo=UTC)


def row(user_id: int, created_at: datetime) -> SourcedUser:
    user = UserRow(
        id=user_id,
        first_name="Ann",
        last_name="Lee",
        email_address=f"ann{user_id}@example.com",
        created_at=created_at,
        deleted_at=None,
        merged_at=None,
        parent_user_id=None,
    )
    return SourcedUser(line=2, user=user)


def test_block_size_matches_the_trigger():
    """The migration's trigger and the model's constant name the same blocks."""
    from importlib import import_module

    migration = import_module("users.migrations.0011_created_spans_of_id_blocks")
    assert f"id >> {USER_ID_BLOCK_BITS} AS block" in migration.WIDEN_FUNCTION


def test_every_write_path_widens_its_block(user_factory, writer_client):
    user_factory(id=5, created_at=day(2015))  # the ORM: one insert
    user_factory(id=7, created_at=day(2024))
    users_upsert(  # the ingest: COPY into the stage, then one merge
        run_id=10**6,
        batch=0,
        rows=[row(BLOCK + 1, day(2016)), row(BLOCK + 2, day(2017)), row(9 * BLOCK, day(2018))],
    )
    created = writer_client.post(
        "/users",
        {
            "first_name": "Bo",
            "last_name": "Park",
            "email_address": "bo@example.com",
            "created_at": "2010-05-05T00:00:00Z",
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert uncovered_users() == []
    spans = {span.block: (span.low, span.high) for span in UserCreatedSpan.objects.all()}
    assert spans[0] == (day(2015), day(2024))
    assert spans[1] == (day(2016), day(2017))
    assert spans[9] == (day(2018), day(2018))


def test_a_later_write_widens_but_never_narrows(user_factory):
    user = user_factory(id=BLOCK + 3, created_at=day(2015))
    user.created_at = day(2030)  # the admin's edit: an update
    user.save()
    users_upsert(run_id=10**6, batch=1, rows=[row(BLOCK + 4, day(2001))])  # a merge's update
    users_upsert(run_id=10**6, batch=2, rows=[row(BLOCK + 4, day(2002))])
    assert uncovered_users() == []
    span = UserCreatedSpan.objects.get(block=1)
    assert (span.low, span.high) == (day(2001), day(2030))  # 2015 and 2001 were left behind
    User.objects.filter(id=user.id).delete()
    assert UserCreatedSpan.objects.get(block=1).high == day(2030)  # still a true bound


@pytest.fixture
def blocks_of_years(user_factory):
    """Blocks of ids created in order of their ids, as a CSV export's, with exceptions: an
    early id created late, and an API user (ids from 10^15) created early."""
    users = []
    for block, year in enumerate([2015, 2016, 2017, 2018, 2019]):
        for n in range(4):
            users.append(user_factory(id=block * BLOCK + 10 * n + 1, created_at=day(year, 1 + n)))
    users.append(user_factory(id=BLOCK + 500, created_at=day(2019, 6)))  # late, among 2016's
    users.append(user_factory(id=10**15 + 1, created_at=day(2014, 3)))  # an API user
    return users


@pytest.mark.parametrize("walk_above", [0.0, 10.0])  # the ids walked, or read from created_at
@pytest.mark.parametrize("ordering", ["id", "-id"])
@pytest.mark.parametrize("page_size", [2])
@pytest.mark.parametrize(
    "after, before",
    [(day(2019), None), (None, day(2015, 3)), (day(2017), day(2018)), (day(2030), None)],
)
def test_window_in_id_order_finds_every_user_of_it(
    reader_client, blocks_of_years, monkeypatch, walk_above, ordering, page_size, after, before
):
    monkeypatch.setattr("users.selectors.CREATED_WINDOW_WALK_ABOVE", walk_above)
    inside = [
        user.id
        for user in blocks_of_years
        if (after is None or user.created_at >= after)
        and (before is None or user.created_at < before)
    ]
    query = "&".join(
        f"{name}={moment.isoformat().replace('+00:00', 'Z')}"
        for name, moment in (("created_after", after), ("created_before", before))
        if moment is not None
    )
    url = f"/users?{query}&ordering={ordering}&page_size={page_size}"
    assert walk_pages(reader_client, url)[0] == sorted(inside, reverse=ordering == "-id")


def test_window_in_id_order_walks_only_the_blocks_it_meets(reader_client, blocks_of_years):
    """created_after=2019: blocks 1 (the late user) and 4 (not the API user's, created 2014);
    the walk is narrowed to those ids (neither block 0 nor the API user's is read)."""
    reader_client.get("/users")  # the token's principal is in Redis from now on
    with CaptureQueriesContext(connection) as captured:
        response = reader_client.get("/users?created_after=2019-01-01T00:00:00Z")
    assert [user["id"] for user in response.json()["results"]] == [
        BLOCK + 500,
        *(4 * BLOCK + 10 * n + 1 for n in range(4)),
    ]
    (page,) = [
        q["sql"] for q in captured if '"users_user"' in q["sql"] and "EXPLAIN" not in q["sql"]
    ]
    assert f'"users_user"."id" >= {BLOCK}' in page, page
    assert f'"users_user"."id" <= {5 * BLOCK - 1}' in page, page


def test_window_meeting_no_block_is_empty(reader_client, blocks_of_years):
    response = reader_client.get("/users?created_after=2031-01-01T00:00:00Z")
    assert response.status_code == 200 and response.json()["results"] == []


def test_spans_past_the_limit_are_not_read(reader_client, blocks_of_years, monkeypatch):
    """Ids spread a block or so per user: the spans are not read; the same pages."""
    monkeypatch.setattr("users.selectors.CREATED_SPAN_BLOCKS_MAX", -2)  # reltuples is -1 or more
    reader_client.get("/users")
    with CaptureQueriesContext(connection) as captured:
        url = "/users?created_after=2019-01-01T00:00:00Z&page_size=2"
        found, _ = walk_pages(reader_client, url)
    assert found == [BLOCK + 500, *(4 * BLOCK + 10 * n + 1 for n in range(4))]
    assert not [q for q in captured if "usercreatedspan" in q["sql"] and "SELECT MIN" in q["sql"]]
