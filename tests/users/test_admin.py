"""The Django admin manages users through the same services as the API: its edits and deletes
refresh the cache and reach the SSE stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.conf import settings

from users import cache
from users.models import User
from users.payloads import user_payload
from users.stream.history import RedisStreamStorage


def last_event(storage: RedisStreamStorage, after: int):
    events = storage.get_events(settings.STREAM_CHANNEL, after)
    return events[-1] if events else None


def test_changelist_searches_by_name_and_filters_deleted(admin_client, user_factory):
    user_factory(first_name="Zelda", last_name="Quist", deleted_at=datetime(2021, 1, 1, tzinfo=UTC))
    user_factory(first_name="Zelda", last_name="Present")

    deleted = admin_client.get("/admin/users/user/", {"q": "zelda", "deleted": "yes"})
    kept = admin_client.get("/admin/users/user/", {"q": "zelda", "deleted": "no"})

    assert deleted.status_code == kept.status_code == 200
    assert b"Quist" in deleted.content and b"Present" not in deleted.content
    assert b"Present" in kept.content and b"Quist" not in kept.content
    # The date hierarchy (by the creation year) and the merged filter link from the page too.
    assert b'href="?created_at__year=2020&amp;deleted=no&amp;q=zelda"' in kept.content
    assert b'href="?deleted=no&amp;merged=yes&amp;q=zelda"' in kept.content


def test_admin_edit_refreshes_the_cache_and_sends_an_event(
    admin_client, user_factory, clean_user_cache, django_capture_on_commit_callbacks
):
    user = user_factory(first_name="Old", source_run_id=3, source_line=7)
    clean_user_cache(user.id)
    cache.cache_user(user_payload(user))
    storage = RedisStreamStorage()
    before = storage.get_current_id(settings.STREAM_CHANNEL)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/users/user/{user.id}/change/",
            {
                "first_name": "New",
                "last_name": user.last_name,
                "email_address": user.email_address,
                "created_at_0": "2020-01-01",
                "created_at_1": "00:00:00",
                "deleted_at_0": "",
                "deleted_at_1": "",
                "merged_at_0": "",
                "merged_at_1": "",
                "parent_user_id": "",
            },
        )

    assert response.status_code == 302, response.content[:2000]
    user.refresh_from_db()
    assert user.first_name == "New"
    assert (user.source_run_id, user.source_line) == (None, None)
    assert json.loads(cache.cached_user_json(user.id)) == user_payload(user)
    event = last_event(storage, before)
    assert event.type == "user.updated"
    assert json.loads(event.data)["first_name"] == "New"


def test_admin_delete_removes_the_cache_entry_and_sends_an_event(
    admin_client, user_factory, clean_user_cache, django_capture_on_commit_callbacks
):
    user = user_factory()
    clean_user_cache(user.id)
    cache.cache_user(user_payload(user))
    storage = RedisStreamStorage()
    before = storage.get_current_id(settings.STREAM_CHANNEL)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/users/user/{user.id}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not User.objects.filter(id=user.id).exists()
    assert cache.cached_user_json(user.id) is None
    event = last_event(storage, before)
    assert (event.type, json.loads(event.data)) == ("user.deleted", {"id": user.id})


def test_token_expiry_changed_in_the_admin_holds_at_once(
    admin_client, api_token, django_capture_on_commit_callbacks
):
    """Saving a token in the admin drops its cached principal (only deletes did), so a token
    made to expire now is refused on the next request, not up to API_TOKEN_CACHE_SECONDS on."""
    from rest_framework.test import APIClient

    from users.access import token_digest
    from users.models import ApiToken

    token = api_token("reader")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/users").status_code == 200
    assert cache.cached_principal(token_digest(token)) is not None
    row = ApiToken.objects.get(digest=token_digest(token))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/users/apitoken/{row.pk}/change/",
            {"label": "expired", "expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"},
        )
    assert response.status_code == 302, response.content[:2000]
    assert cache.cached_principal(token_digest(token)) is None
    assert client.get("/users").status_code == 401


# --- Bounded at any size: search, counts, pages, sorting, date drill-down -------------------

LIST = "/admin/users/user/"


def _queries_of(client, url: str, **params):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, response.content[:500]
    return response, [query["sql"] for query in captured]


def test_admin_search_is_the_api_substring_search_on_its_indexes(rf, user_factory):
    from django.contrib import admin
    from django.db import connection

    ann = user_factory(first_name="Ann", last_name="Smith", email_address="a.s@corp.example")
    user_factory(first_name="Bob", last_name="Jones", email_address="bob@mail.example")
    model_admin = admin.site._registry[User]
    request = rf.get(LIST)

    def search(text):
        return model_admin.get_search_results(request, User.objects.all(), text)[0]

    assert [user.id for user in search("ann smi")] == [ann.id]  # across "first last"
    assert [user.id for user in search("CORP.EX")] == [ann.id]  # the email address
    assert list(search("Smith Ann")) == []  # one substring, not words in any order
    with connection.cursor() as cursor:
        # On a few rows the planner would rather walk them all; leave it the bitmap scans.
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
        plan = search("smith").explain()
    assert "users_full_name_trgm" in plan and "users_email_ngrams_gin" in plan, plan


def test_admin_search_without_a_trigram_lists_nothing_and_says_why(admin_client, user_factory):
    user_factory(first_name="Zq", last_name="Zq")
    response, queries = _queries_of(admin_client, LIST, q="zq")
    assert "at least 3 letters or digits in a row" in response.content.decode()
    assert list(response.context["cl"].result_list) == []
    assert not any("LIKE" in sql for sql in queries), queries


def test_admin_counts_stop_at_the_cap_and_pages_at_the_limit(
    admin_client, user_factory, monkeypatch
):
    from users import admin as users_admin

    user_factory.create_batch(12)
    monkeypatch.setattr(users_admin, "EXACT_COUNT_UP_TO", 5)
    monkeypatch.setattr(users_admin, "MAX_PAGES", 2)
    monkeypatch.setattr(users_admin.UserAdmin, "list_per_page", 3)
    # (The plain list's count beyond the cap is the table's statistics, selectors.user_count.)
    for params in ({"deleted": "no"}, {"q": "example"}, {"created_at__year": "2020"}):
        response, queries = _queries_of(admin_client, LIST, **params)
        # A count, or for a search (email candidates) the read that counts them, stops there.
        counts = [sql for sql in queries if "COUNT(" in sql]
        if "q" in params:
            counts += [sql for sql in queries if '"email_address" AS "email_address"' in sql]
        assert counts and all("LIMIT 6" in sql for sql in counts), counts  # never the whole set
        cl = response.context["cl"]
        assert cl.result_count >= 6 and cl.paginator.num_pages == 2
    assert admin_client.get(LIST, {"p": 3}).status_code == 302  # past the last page: ?e=1
    few, _ = _queries_of(admin_client, LIST, q="nobody-at-all")
    assert few.context["cl"].result_count == 0  # under the cap: exact


def test_admin_sorts_only_by_indexed_columns_with_ties_by_id_in_the_same_direction(
    admin_client, user_factory
):
    names = [("b", "lee"), ("a", "Adams"), ("c", "LEE"), ("d", "baker")]
    users = [user_factory(first_name=first, last_name=last) for first, last in names]

    def by_name(response):
        return [user.id for user in response.context["cl"].result_list]

    o = {name: str(n) for n, name in enumerate(admin_client.get(LIST).context["cl"].list_display)}
    ascending = admin_client.get(LIST, {"o": o["last_name"]})
    assert by_name(ascending) == [users[1].id, users[3].id, users[0].id, users[2].id]
    sql = str(ascending.context["cl"].result_list.query)
    assert 'ORDER BY UPPER("users_user"."last_name") ASC, "users_user"."id" ASC' in sql, sql
    descending = admin_client.get(LIST, {"o": f"-{o['last_name']}"})
    assert by_name(descending) == [users[2].id, users[0].id, users[3].id, users[1].id]
    # First names have no index: the column does not sort (the list stays in id order).
    unsorted = admin_client.get(LIST, {"o": o["first_name"]})
    assert by_name(unsorted) == sorted(u.id for u in users)
    page = unsorted.content.decode()
    assert "sortable column-first_name" not in page and "sortable column-last_name" in page


def test_admin_date_drilldown_counts_no_distinct_dates(admin_client, user_factory):
    user_factory(created_at=datetime(2019, 6, 1, tzinfo=UTC))
    user_factory(created_at=datetime(2022, 3, 5, tzinfo=UTC))
    response, queries = _queries_of(admin_client, LIST)
    page = response.content.decode()
    assert not any("DISTINCT" in sql for sql in queries), queries
    for year in range(2019, 2023):  # from the oldest user's year to the newest one's
        assert f'href="?created_at__year={year}"' in page
    response, queries = _queries_of(admin_client, LIST, created_at__year="2022")
    assert not any("DISTINCT" in sql for sql in queries), queries
    page = response.content.decode()
    assert all(f"created_at__month={month}" in page for month in range(1, 13))
    response, _ = _queries_of(admin_client, LIST, created_at__year="2022", created_at__month="3")
    assert "created_at__day=31" in response.content.decode()
    assert [u.created_at.day for u in response.context["cl"].result_list] == [5]


def test_admin_date_drilldown_lists_the_period_newest_first(admin_client, user_factory):
    """Along the created_at index: in id order PostgreSQL walks every user created before."""
    older = user_factory(created_at=datetime(2022, 3, 5, tzinfo=UTC))
    newer = user_factory(created_at=datetime(2022, 7, 1, tzinfo=UTC))
    user_factory(created_at=datetime(2023, 1, 1, tzinfo=UTC))
    response, _ = _queries_of(admin_client, LIST, created_at__year="2022")
    cl = response.context["cl"]
    assert [user.id for user in cl.result_list] == [newer.id, older.id]
    assert 'ORDER BY "users_user"."created_at" DESC, "users_user"."id" DESC' in str(
        cl.result_list.query
    )


def test_admin_date_drilldown_sorted_by_a_column_breaks_ties_by_id(admin_client, user_factory):
    """Under a column's sort the period is not ordered by creation time too: the last name's
    index holds (UPPER(last_name), id), not the creation time after the name."""
    users = [
        user_factory(last_name=name, created_at=datetime(2022, month, 1, tzinfo=UTC))
        for name, month in [("Lee", 3), ("adams", 5), ("LEE", 7), ("Zed", 2)]
    ]
    user_factory(last_name="Aaron", created_at=datetime(2023, 1, 1, tzinfo=UTC))
    o = {name: str(n) for n, name in enumerate(admin_client.get(LIST).context["cl"].list_display)}
    response, _ = _queries_of(admin_client, LIST, created_at__year="2022", o=o["last_name"])
    cl = response.context["cl"]
    assert [user.id for user in cl.result_list] == [users[n].id for n in (1, 0, 2, 3)]
    sql = str(cl.result_list.query)
    assert 'ORDER BY UPPER("users_user"."last_name") ASC, "users_user"."id" ASC' in sql, sql


def test_admin_search_walked_or_sorted_lists_the_same_users(
    admin_client, user_factory, monkeypatch
):
    """A common text walks the list's order with the search as a filter, a rare one sorts its
    matches from the trigram indexes (users.selectors.user_substring_plan): the same page."""
    # The sample is the whole table, however many pages earlier tests' rolled-back rows left.
    monkeypatch.setattr("users.selectors.SUBSTRING_SAMPLE_PAGES", 10**6)
    for n in range(7):
        user_factory(first_name=["Ashley", "Bob", "Sasha"][n % 3], last_name="Lee")
    pages = []
    for cost in (0.0, 10.0**9):  # always walk, always sort
        monkeypatch.setattr("users.selectors.WALK_COST", {"id": cost})
        response, queries = _queries_of(admin_client, LIST, q="ash")
        pages.append([user.id for user in response.context["cl"].result_list])
        like = [sql for sql in queries if "LIKE" in sql and "TABLESAMPLE" not in sql]
        assert like and all(("|| COALESCE('', '')" in sql) == (cost == 0.0) for sql in like), like
    assert pages[0] == pages[1] and len(pages[0]) == 5


def test_the_list_checkbox_is_djangos_own_html(user_factory):
    """UserAdmin.action_checkbox writes Django's checkbox widget directly (the widget's
    template costs ~0.3 ms a row); a name with markup in it is escaped the same way."""
    from django.contrib import admin as django_admin

    from users.admin import UserAdmin

    user = user_factory(first_name='<b>O\'Neil & "Co"</b>', last_name="Lee")
    ours = UserAdmin(User, django_admin.site)
    assert ours.action_checkbox(user) == django_admin.ModelAdmin.action_checkbox(ours, user)
