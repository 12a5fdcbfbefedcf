"""GET /users: UserFilter parameters, ordering, keyset pagination and its query count."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import pytest

from tests.support.pages import ids, walk_pages

pytestmark = pytest.mark.django_db


def cursor(key, back: bool = False) -> str:
    """A cursor as the pagination writes it, holding any key."""
    return token(json.dumps({"k": key, "b": back}).encode())


def token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def walk(client, url: str) -> list[int]:
    """Follow `next` links to the end; return the ids in the order they were served."""
    return walk_pages(client, url)[0]


@pytest.fixture
def people(user_factory):
    make = user_factory
    return {
        "ann": make(first_name="Ann", last_name="Smith", email_address="ann.smith@corp.example"),
        "joanna": make(first_name="Joanna", last_name="Brown", email_address="jb@mail.example"),
        "bob": make(
            first_name="Bob",
            last_name="Annis",
            email_address="BOB@Mail.example",
            created_at=datetime(2019, 6, 1, tzinfo=UTC),
        ),
        "carl": make(
            first_name="Carl",
            last_name="Smith",
            email_address="carl@corp.example",
            deleted_at=datetime(2023, 1, 1, tzinfo=UTC),
            merged_at=datetime(2023, 1, 1, tzinfo=UTC),
            parent_user_id=42,
        ),
    }


def pick(people, *names) -> list[int]:
    return sorted(people[name].id for name in names)


@pytest.mark.parametrize(
    "query, expected",
    [
        ("name=ann", ["ann", "joanna", "bob"]),  # first name, first name, last name
        ("name=ANN S", ["ann"]),  # across "first last"
        ("name=n smi", ["ann"]),
        ("email=MAIL.EX", ["joanna", "bob"]),
        ("first_name=ann", ["ann"]),  # exact, not substring
        ("last_name=SMITH", ["ann", "carl"]),
        ("email_address=bob@mail.example", ["bob"]),
        ("created_before=2020-01-01T00:00:00Z", ["bob"]),
        ("created_after=2020-01-01T00:00:00Z", ["ann", "joanna", "carl"]),
        ("deleted=true", ["carl"]),
        ("deleted=false", ["ann", "joanna", "bob"]),
        ("merged=true", ["carl"]),
        ("merged=0", ["ann", "joanna", "bob"]),
        ("parent_user_id=42", ["carl"]),
        ("name=smith&deleted=false", ["ann"]),  # filters combine with AND
        ("last_name=smith&email=corp&merged=true&parent_user_id=42", ["carl"]),
        ("name=nobody", []),
    ],
)
def test_filter(reader_client, people, query, expected):
    assert sorted(ids(reader_client.get(f"/users?{query}"))) == pick(people, *expected)


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("created_after=yesterday", "created_after"),
        ("created_before=2020-13-01", "created_before"),
        ("deleted=maybe", "deleted"),
        ("merged=2", "merged"),
        ("parent_user_id=abc", "parent_user_id"),
        ("ordering=email_address", "ordering"),
        ("page_size=0", "page_size"),
        ("page_size=ten", "page_size"),
        ("cursor=garbage", "cursor"),
        # Instants PostgreSQL or Python cannot take: offsets past ±15:59, beyond year 9999 or
        # before year 1 once in UTC.
        ("created_after=0399-07-19T00:27:07.12-16:41", None),
        ("created_before=9999-12-31T23:59:59.999999-23:59", "created_before"),
        ("created_after=0001-01-01T00:00:00%2B00:01", "created_after"),
        ("created_after=2020-01-01T00:00:00%00", None),  # Python reads it, NUL and all
        ("page_size=%C2%B2", "page_size"),  # "²": str.isdigit() says yes, int() says no
        ("page_size=%D9%A1%D9%A2", "page_size"),  # Arabic-Indic "12": ASCII digits only
        ("page_size=" + "9" * 5000, None),  # capped, like any large size
        ("page_size=00", "page_size"),
        ("parent_user_id=" + "9" * 30, "parent_user_id"),
        ("parent_user_id=9223372036854775808", "parent_user_id"),  # bigint max + 1
        ("parent_user_id=" + "9" * 5000, "parent_user_id"),
        ("parent_user_id=0", "parent_user_id"),
        ("parent_user_id=%D9%A1", "parent_user_id"),
        ("name=a%00b", "name"),  # PostgreSQL text holds no NUL
        ("last_name=a%00b", "last_name"),
        ("email=%00", "email"),
        ("name=%FF%FE", "name"),  # not UTF-8: read as U+FFFD, no letter: nothing to index
        ("name=%FF%FEabc", None),  # the same with a trigram beside it: matches nothing
        ("ordering=%FF", "ordering"),
        ("deleted=%FF", "deleted"),
        ("cursor=" + token(b"[" * 5000), "cursor"),  # json.loads: RecursionError
        ("cursor=" + token(b'{"k":' + b"[" * 5000 + b"]" * 5000 + b"}"), "cursor"),
        ("cursor=" + "A" * 5000, "cursor"),
        ("cursor=%FF%FE", "cursor"),
        ("cursor=" + token(b"\xff\xfe"), "cursor"),
        ("cursor=" + cursor([True]), "cursor"),
        ("cursor=" + cursor([10**30]), "cursor"),
        ("cursor=" + cursor([0]), "cursor"),
        ("cursor=" + cursor(None), "cursor"),
        ("cursor=" + token(b"[]"), "cursor"),
        ("cursor=" + token(b'{"k":[1e999]}'), "cursor"),
        ("ordering=created_at&cursor=" + cursor(["0399-07-19T00:27:07.12-16:41", 1]), None),
        ("ordering=created_at&cursor=" + cursor(["9999-12-31T23:59:59.999999-23:59", 1]), "cursor"),
        ("ordering=created_at&cursor=" + cursor(["2020-01-01T00:00:00", 1]), "cursor"),
        ("ordering=created_at&cursor=" + cursor([12, 1]), "cursor"),
        ("ordering=last_name&cursor=" + cursor(["a\x00b", 1]), "cursor"),
        ("ordering=last_name&cursor=" + cursor(["x" * 256, 1]), "cursor"),
        ("ordering=last_name&cursor=" + cursor(["Lee", 10**30]), "cursor"),
        ("ordering=last_name&cursor=" + cursor([["Lee"], 1]), "cursor"),
    ],
)
def test_bad_parameter_is_400_naming_it(reader_client, people, caplog, query, parameter):
    """Every value a client can send is a 200 or a 400 naming its parameter, logged as one line
    (parameter None: a value that is valid after all, e.g. an offset made UTC)."""
    response = reader_client.get(f"/users?{query}")
    if parameter is None:
        assert response.status_code == 200, response.content
        assert not caplog.records, caplog.text
        return
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body) == [parameter]
    assert isinstance(body[parameter], list) and body[parameter]
    assert all(isinstance(message, str) and len(message) < 200 for message in body[parameter])
    assert [record.levelname for record in caplog.records] == ["WARNING"], caplog.text
    assert caplog.records[0].exc_info is None


def test_created_filters_compare_in_utc(reader_client, people):
    # 2019-06-01T00:00Z is bob's created_at; 2019-05-31T08:19-15:41 is the same instant.
    same = quote("2019-05-31T08:19:00-15:41")
    assert ids(
        reader_client.get(f"/users?created_after={same}&created_before=2019-06-02T00:00Z")
    ) == [people["bob"].id]
    assert ids(reader_client.get(f"/users?created_before={same}")) == []


def test_cursor_holding_an_offset_timestamp_resumes_at_the_same_instant(reader_client, people):
    # bob at 2019-06-01T00:00Z, the others from 2020: after bob's instant in another offset.
    key = ["2019-05-31T08:19:00-15:41", people["bob"].id]
    response = reader_client.get(f"/users?ordering=created_at&cursor={cursor(key)}")
    assert ids(response) == [people[name].id for name in ("ann", "joanna", "carl")]


def test_page_shape_and_default_order(reader_client, people):
    body = reader_client.get("/users").json()
    assert set(body) == {"results", "next", "previous"}
    assert body["next"] is None and body["previous"] is None
    assert [user["id"] for user in body["results"]] == pick(people, *people)


@pytest.mark.parametrize("page_size", [1, 2, 3, 7])
@pytest.mark.parametrize(
    "ordering", ["id", "-id", "created_at", "-created_at", "last_name", "-last_name"]
)
def test_walking_all_pages_returns_every_row_once(reader_client, user_factory, ordering, page_size):
    # Few distinct last names and timestamps: ties must be broken by id, not skipped.
    same_time = datetime(2021, 5, 5, tzinfo=UTC)
    users = [
        user_factory(last_name=["Lee", "Kim", "Lee", "Ng"][n % 4], created_at=same_time)
        for n in range(13)
    ]
    seen = walk(reader_client, f"/users?ordering={ordering}&page_size={page_size}")
    assert sorted(seen) == sorted(user.id for user in users)
    assert len(seen) == len(set(seen))
    field = ordering.lstrip("-")
    by_id = {user.id: user for user in users}
    keys = [(getattr(by_id[i], field), i) for i in seen]
    assert keys == sorted(keys, reverse=ordering.startswith("-"))


def test_previous_link_returns_the_previous_page(reader_client, user_factory):
    users = sorted(user.id for user in (user_factory() for _ in range(7)))
    first = reader_client.get("/users?page_size=3").json()
    second = reader_client.get(first["next"]).json()
    assert [u["id"] for u in second["results"]] == users[3:6]
    back = reader_client.get(second["previous"]).json()
    assert [u["id"] for u in back["results"]] == users[0:3]
    assert back["previous"] is None
    assert back["next"] is not None


def test_page_size_is_capped_at_1000(reader_client, user_factory):
    user_factory.create_batch(3)
    response = reader_client.get("/users?page_size=5000")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 3


def test_list_runs_one_query_whatever_the_page_size(reader_client, user_factory):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def users_queries(url: str):
        with CaptureQueriesContext(connection) as captured:
            response = reader_client.get(url)
        assert response.status_code == 200
        # Besides it only the read bound's `SET LOCAL statement_timeout` (and savepoints), and
        # the substring's counts on a sample of the table (users.selectors.user_substring_plan:
        # the list's, and in last-name order its name's alone).
        others = [q["sql"] for q in captured if "users_user" not in q["sql"]]
        assert all("SAVEPOINT" in sql or "statement_timeout" in sql for sql in others), others
        samples = [q["sql"] for q in captured if "TABLESAMPLE" in q["sql"]]
        assert len(samples) <= 2, samples
        return response, len(captured) - len(others) - len(samples)

    user_factory.create_batch(30)
    reader_client.get("/users")  # the token's principal is in Redis from now on
    for page_size in (5, 25):
        response, count = users_queries(f"/users?page_size={page_size}&name=son&ordering=last_name")
        assert count == 1
        assert users_queries(response.json()["next"] or "/users")[1] == 1


def test_exact_names_are_not_patterns(reader_client, user_factory):
    """Spaces, % and _ in a name are literal: the exact filters never match on a part."""
    mary = user_factory(first_name="Mary Ann", last_name="O_Neil%")
    user_factory(first_name="Mary", last_name="Ann O_Neil%")
    user_factory(first_name="MaryXAnn", last_name="OXNeil")
    assert ids(reader_client.get("/users?first_name=mary ann")) == [mary.id]
    assert ids(reader_client.get("/users?last_name=o_neil%25")) == [mary.id]
    assert ids(reader_client.get("/users?first_name=mary_ann")) == []
    assert ids(reader_client.get("/users?last_name=neil%25")) == []


@pytest.mark.parametrize(
    "params, index",
    [
        ({"first_name": "ann"}, "users_full_name_trgm"),
        ({"last_name": "smith"}, "users_last_name_names_idx"),
        ({"name": "ann"}, "users_full_name_trgm"),
        ({"email": "corp"}, "users_email_ngrams_gin"),
        ({"email_address": "bob@mail.example"}, "users_email_digest_idx"),
    ],
)
def test_text_filters_can_use_an_index(people, params, index, monkeypatch):
    from django.db import connection

    # Substrings found through their index, not walked for (users.selectors.WALK_COST): on
    # four rows a substring matching three would otherwise be walked for.
    monkeypatch.setattr("users.selectors.WALK_COST", {})

    from users.filters import UserFilter
    from users.models import User

    queryset = UserFilter(params, queryset=User.objects.all()).qs
    with connection.cursor() as cursor:
        # On a 4-row table the planner would rather scan; leave it only the bitmap scans.
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
        plan = queryset.explain()
    assert index in plan, plan


def test_browsable_filters_form_labels_each_box_with_its_parameter(
    client, django_user_model, plain_static_storage
):
    from django.contrib.auth.models import Permission

    from users.filters import UserFilter

    reader = django_user_model.objects.create_user("browser", password="pw")
    reader.user_permissions.add(
        Permission.objects.get(codename="view_user", content_type__app_label="users")
    )
    client.force_login(reader)
    response = client.get("/users", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    page = response.content.decode()

    for name in UserFilter.base_filters:
        assert f'<label for="id_{name}">{name}:</label>' in page, name
    assert "Exact, case-insensitive." not in page
    for name in ("deleted", "merged"):
        assert f'<select name="{name}"' in page
        assert '<option value="true">true</option>' in page
        assert '<option value="false">false</option>' in page


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("name=q", "name"),
        ("name=zq", "name"),
        ("email=qz", "email"),
        ("name=a b", "name"),  # three characters, but no three letters in a row
        ("email=%25%25%25", "email"),  # "%%%": no letter at all
        ("email=a.b@c", "email"),
    ],
)
def test_substring_without_a_trigram_is_400_naming_the_minimum(
    reader_client, people, query, parameter
):
    """No index can serve a substring shorter than a trigram: PostgreSQL would read every row."""
    response = reader_client.get(f"/users?{query}")
    assert response.status_code == 400, response.content
    (message,) = response.json()[parameter]
    assert "at least 3 letters or digits in a row" in message


def test_substring_of_three_letters_is_searched(reader_client, people):
    assert sorted(ids(reader_client.get("/users?name=%20ann%20"))) == pick(
        people, "ann", "joanna", "bob"
    )
    assert ids(reader_client.get("/users?email=xyz.")) == []
    assert ids(reader_client.get("/users?name=")) == pick(people, *people)  # blank: no filter


def test_browsable_filters_form_shows_the_minimum(client, django_user_model, plain_static_storage):
    from django.contrib.auth.models import Permission

    reader = django_user_model.objects.create_user("browser", password="pw")
    reader.user_permissions.add(
        Permission.objects.get(codename="view_user", content_type__app_label="users")
    )
    client.force_login(reader)
    response = client.get("/users?name=zq", HTTP_ACCEPT="text/html")
    assert response.status_code == 400
    assert "at least 3 letters or digits in a row" in response.content.decode()


def _plan_of_list(reader_client, url: str) -> str:
    """EXPLAIN of the query GET `url` runs, with sequential and bitmap scans priced out (on a
    few rows the planner would rather read them all and sort, whatever the indexes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert reader_client.get(url).status_code == 200
    # The page's query (not a filter's EXPLAIN of its estimate).
    (sql,) = [q["sql"] for q in captured if "users_user" in q["sql"] and "EXPLAIN" not in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.parametrize("ordering", ["id", "-id", "last_name", "-last_name"])
def test_exact_last_name_is_one_index_range_under_every_ordering(reader_client, people, ordering):
    """The filter compares UPPER(last_name) and the index leads with it: a range scan in the
    page's order, with no sort and no filter of the rows it reads."""
    plan = _plan_of_list(reader_client, f"/users?last_name=smith&ordering={ordering}")
    assert "Index Scan" in plan and "users_last_name_names_idx" in plan, plan
    assert "Sort" not in plan and "Filter" not in plan, plan


def test_last_name_ordering_is_an_index_scan_from_a_cursor(reader_client, user_factory):
    user_factory.create_batch(5)
    first = reader_client.get("/users?ordering=-last_name&page_size=2").json()
    plan = _plan_of_list(
        reader_client, urlsplit(first["next"]).path + "?" + urlsplit(first["next"]).query
    )
    assert "users_last_name_names_idx" in plan and "Sort" not in plan, plan


@pytest.mark.parametrize("ordering", ["last_name", "-last_name"])
@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_last_names_sort_without_regard_to_case(reader_client, user_factory, ordering, page_size):
    """ "adams" before "Baker" before "CARTER" (byte order would put "adams" last), names equal
    but for case ("Lee", "LEE", "lee") by id; every page walked once."""
    names = ["Baker", "adams", "Lee", "CARTER", "lee", "LEE", "O'Brien", "o'brien", "de la Cruz"]
    users = [user_factory(last_name=name) for name in names]
    seen = walk(reader_client, f"/users?ordering={ordering}&page_size={page_size}")
    by_id = {user.id: user for user in users}
    keys = [(by_id[i].last_name.upper(), i) for i in seen]
    assert sorted(seen) == sorted(by_id)
    assert keys == sorted(keys, reverse=ordering.startswith("-"))


# --- shapes rewritten for a bounded plan at 5M users (users.selectors) ----------------------


def _expected_order(users, ordering: str) -> list[int]:
    field = ordering.lstrip("-")

    def key(user):
        value = getattr(user, field)
        return (value.upper() if field == "last_name" else value, user.id)

    return [u.id for u in sorted(users, key=key, reverse=ordering.startswith("-"))]


@pytest.mark.parametrize("page_size", [1, 2, 3])
@pytest.mark.parametrize("ordering", ["created_at", "-created_at"])
@pytest.mark.parametrize("flag", ["deleted", "merged"])
def test_last_name_with_a_rare_flag_by_creation_walks_every_page_in_order(
    reader_client, user_factory, flag, ordering, page_size
):
    """last_name + deleted/merged=true + created_at ordering, read from the flag's partial
    index: same rows, same order, ties by id, every page once."""
    moment = datetime(2021, 5, 5, tzinfo=UTC)
    flagged = {f"{flag}_at": moment}
    times = [datetime(2020, 1, day, tzinfo=UTC) for day in (3, 1, 2, 1, 3, 1)]
    matching = [
        user_factory(last_name=name, created_at=at, **flagged)
        for name, at in zip(["Smith", "SMITH", "smith"] * 2, times, strict=True)
    ]
    user_factory(last_name="Smith", created_at=times[0])  # flag not set
    user_factory(last_name="Smyth", created_at=times[1], **flagged)
    url = f"/users?last_name=Smith&{flag}=true&ordering={ordering}&page_size={page_size}"
    assert walk(reader_client, url) == _expected_order(matching, ordering)


@pytest.mark.parametrize("ordering", ["created_at", "-created_at"])
@pytest.mark.parametrize(
    "flag, index",
    [("deleted", "users_deleted_name_created_idx"), ("merged", "users_merged_name_created_idx")],
)
def test_last_name_with_a_rare_flag_by_creation_is_one_partial_index_range(
    reader_client, user_factory, flag, index, ordering
):
    """The flag's partial index holds the last name, then created_at and id: one range in the
    page's order, no sort, no row read for the flag; also from a cursor."""
    moment = datetime(2021, 5, 5, tzinfo=UTC)
    for n in range(4):
        user_factory(
            last_name="Smith",
            created_at=datetime(2020, 1, n + 1, tzinfo=UTC),
            **{f"{flag}_at": moment},
        )
    url = f"/users?last_name=smith&{flag}=true&ordering={ordering}&page_size=2"
    for page in (url, reader_client.get(url).json()["next"]):
        plan = _plan_of_list(reader_client, page)
        assert f"Index Scan using {index}" in plan or f"Index Scan Backward using {index}" in plan
        # From a cursor only the keyset's own condition on the index's columns is a filter.
        filters = [line for line in plan.splitlines() if "Filter" in line]
        assert "Sort" not in plan and not [f for f in filters if f"{flag}_at" in f], plan
    # deleted=false is most users: no partial index, the planner's own choice.
    plan = _plan_of_list(reader_client, "/users?last_name=smith&deleted=false&ordering=created_at")
    assert "name_created_idx" not in plan, plan


def test_previous_link_of_a_last_name_with_deleted_by_creation(reader_client, user_factory):
    moment = datetime(2021, 5, 5, tzinfo=UTC)
    users = [
        user_factory(last_name="Smith", deleted_at=moment, created_at=datetime(2020, 1, n % 3 + 1))
        for n in range(7)
    ]
    expected = _expected_order(users, "created_at")
    first = reader_client.get("/users?last_name=smith&deleted=true&ordering=created_at&page_size=3")
    second = reader_client.get(first.json()["next"])
    assert ids(second) == expected[3:6]
    assert ids(reader_client.get(second.json()["previous"])) == expected[0:3]


@pytest.mark.parametrize(
    "address, expected",
    [
        ("ann.smith@corp.example", ["ann"]),
        ("ANN.SMITH@CORP.EXAMPLE", ["ann"]),
        ("bob@mail.example", ["bob"]),
        ("b@mail.example", []),  # no trigram before the "@": the whole address is looked up
        ("ann.smith@corp.exampl", []),  # exact, not a substring
        ("ann.smith", []),
        ("ann_smith@corp.example", []),  # _ and % are literal
        ("ann%smith@corp.example", []),
    ],
)
def test_email_address_is_exact_and_case_insensitive(reader_client, people, address, expected):
    response = reader_client.get(f"/users?email_address={quote(address)}")
    assert sorted(ids(response)) == pick(people, *expected)


def test_email_address_with_a_short_local_part_is_found(reader_client, user_factory):
    user = user_factory(email_address="Ab@Example.org")
    user_factory(email_address="xab@example.org")
    assert ids(reader_client.get("/users?email_address=aB%40example.ORG")) == [user.id]


def test_email_filters_send_no_address_to_the_database(people):
    from django.db import connection

    from users.filters import UserFilter
    from users.models import User

    for params in ({"email_address": "Ann.Smith@corp.example"}, {"email": "ann.smith@corp"}):
        queryset = UserFilter(params, queryset=User.objects).qs
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
            plan = queryset.explain()
        # Digests and buckets only: the query (and so PostgreSQL's logs) holds no address.
        assert "users_email_digest_idx" in plan or "users_email_ngrams_gin" in plan, plan
        assert "ann" not in plan.lower() and "corp" not in plan.lower(), plan


@pytest.fixture
def first_names(user_factory):
    """Ashleys (mixed case, equal last names, one "Ashley Ann") and others around them."""
    names = [("Ashley", "Lee"), ("ASHLEY", "adams"), ("ashley", "Lee"), ("Ashley", "Zed")]
    names += [("Ashley Ann", "Lee"), ("Ashleyx", "Lee"), ("Ann", "Ashley"), ("Bob", "Lee")]
    names += [("Ashley", "lee"), ("Ashley", "Baker")]
    return [user_factory(first_name=first, last_name=last) for first, last in names]


@pytest.mark.parametrize("common_above", [0, 10**9])
@pytest.mark.parametrize("ordering", ["id", "-created_at", "last_name", "-last_name"])
@pytest.mark.parametrize("page_size", [1, 3])
def test_first_name_common_or_rare_walks_the_same_pages(
    reader_client, first_names, monkeypatch, common_above, ordering, page_size
):
    """Either plan of the exact first name (rare: trigram index; common: the ordering's index)
    serves the same rows in the same order, page after page."""
    monkeypatch.setattr("users.selectors.FIRST_NAME_COMMON_ABOVE", common_above)
    ashleys = [user for user in first_names if user.first_name.upper() == "ASHLEY"]
    url = f"/users?first_name=Ashley&ordering={ordering}&page_size={page_size}"
    assert walk(reader_client, url) == _expected_order(ashleys, ordering)


def test_common_first_name_by_last_name_walks_the_last_name_index(
    reader_client, first_names, monkeypatch
):
    monkeypatch.setattr("users.selectors.FIRST_NAME_COMMON_ABOVE", 0)  # any estimate: common
    plan = _plan_of_page(reader_client, "/users?first_name=Ashley&ordering=last_name", "bitmap")
    assert "Index Scan using users_last_name_names_idx" in plan, plan
    assert "Sort" not in plan and "users_full_name_trgm" not in plan, plan


def test_rare_first_name_is_read_through_the_trigram_index(reader_client, first_names):
    plan = _plan_of_page(reader_client, "/users?first_name=Ashley&ordering=last_name", "index")
    assert "users_full_name_trgm" in plan, plan


def _plan_of_page(reader_client, url: str, scan: str) -> str:
    """EXPLAIN of the page query of GET `url` (the last query on users: the first name's
    estimate comes before it), with sequential scans and `scan` ("index" or "bitmap") priced out."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert reader_client.get(url).status_code == 200
    sql = [q["sql"] for q in captured if "users_user" in q["sql"]][-1]
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL enable_seqscan = off; SET LOCAL enable_{scan}scan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


# --- a created_at window in id order (users.selectors.user_created_window_by_id) -------------


@pytest.fixture
def created_window(user_factory):
    """Users created across 2019-2021 in an order unrelated to their ids, some on one instant."""
    days = [datetime(2019 + n % 3, 1 + n % 5, 1 + n % 7, tzinfo=UTC) for n in range(20)]
    return [user_factory(created_at=day) for day in days]


@pytest.mark.parametrize("walk_above", [0.0, 10.0])  # the primary key walked, or ids first
@pytest.mark.parametrize("probe_ids", [1, 3, 1000])  # a probe too short, or long enough
@pytest.mark.parametrize("ordering", ["id", "-id"])
@pytest.mark.parametrize("page_size", [1, 3, 7])
@pytest.mark.parametrize(
    "window",
    [
        "created_after=2020-01-01T00:00:00Z",
        "created_before=2020-03-02T00:00:00Z",
        "created_after=2019-02-01T00:00:00Z&created_before=2021-02-01T00:00:00Z",
    ],
)
def test_created_window_by_id_walks_the_same_pages_on_either_plan(
    reader_client, created_window, monkeypatch, walk_above, probe_ids, ordering, page_size, window
):
    monkeypatch.setattr("users.selectors.CREATED_WINDOW_WALK_ABOVE", walk_above)
    monkeypatch.setattr("users.selectors.WINDOW_PROBE_IDS", probe_ids)
    params = dict(part.split("=") for part in window.split("&"))
    after = datetime.fromisoformat(params.get("created_after", "0001-01-01T00:00:00+00:00"))
    before = datetime.fromisoformat(params.get("created_before", "9999-01-01T00:00:00+00:00"))
    inside = [user for user in created_window if after <= user.created_at < before]
    url = f"/users?{window}&ordering={ordering}&page_size={page_size}"
    assert walk(reader_client, url) == _expected_order(inside, ordering)


def test_created_window_by_id_reads_the_page_ids_from_the_created_at_index(
    reader_client, created_window, monkeypatch
):
    """Past a probe of the next ids that finds too few, the page's ids come from
    users_created_at_id_idx alone (an index-only scan), the rows by primary key; also from a
    cursor, and paging back."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr("users.selectors.WINDOW_PROBE_IDS", 2)
    monkeypatch.setattr("users.selectors.CREATED_WINDOW_WALK_ABOVE", 10.0)  # never walked
    url = "/users?created_after=2020-01-01T00:00:00Z&page_size=5"
    second = reader_client.get(url).json()["next"]
    back = reader_client.get(second).json()["previous"]
    for page in (url, second, back):
        with CaptureQueriesContext(connection) as captured:
            assert reader_client.get(page).status_code == 200
        (sql,) = [q["sql"] for q in captured if " IN (SELECT" in q["sql"]]
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Index Only Scan using users_created_at_id_idx" in plan, plan
        assert "Index Scan using users_user_pkey" in plan, plan


def test_created_window_of_nearly_every_user_walks_the_primary_key(reader_client, created_window):
    """A window the planner expects to hold nearly every user (past CREATED_WINDOW_WALK_ABOVE)
    keeps the planner's plan: one query, no ids-first step."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE users_user")  # statistics: the window holds every user
    reader_client.get("/users")  # the token's principal is in Redis from now on
    with CaptureQueriesContext(connection) as captured:
        response = reader_client.get("/users?created_after=2000-01-01T00:00:00Z")
    assert ids(response) == sorted(user.id for user in created_window)
    (page,) = [
        q["sql"] for q in captured if '"users_user"' in q["sql"] and "EXPLAIN" not in q["sql"]
    ]
    assert " IN (SELECT" not in page, page


def test_created_window_with_another_filter_keeps_the_planners_plan(reader_client, people):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    reader_client.get("/users")
    with CaptureQueriesContext(connection) as captured:
        response = reader_client.get("/users?created_after=2020-01-01T00:00:00Z&last_name=smith")
    assert ids(response) == pick(people, "ann", "carl")
    assert not [q for q in captured if "EXPLAIN" in q["sql"] or " IN (SELECT" in q["sql"]]


def test_created_window_dense_past_the_cursor_is_found_by_the_probe(
    reader_client, created_window, monkeypatch
):
    """A window holding most of the next ids is served from them (a range of the primary key):
    no ids-first query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr("users.selectors.CREATED_WINDOW_WALK_ABOVE", 10.0)  # never walked
    reader_client.get("/users")
    with CaptureQueriesContext(connection) as captured:
        response = reader_client.get("/users?created_after=2000-01-01T00:00:00Z&page_size=5")
    assert ids(response) == sorted(user.id for user in created_window)[:5]
    assert not [q for q in captured if " IN (SELECT" in q["sql"]]


# --- substrings of several words (users.selectors.user_contains) ----------------------------


@pytest.mark.parametrize(
    "query",
    [
        "name=Ashley Ramirez",
        "name=ley ram",
        "name=Ramirez Ashley",
        "name=Ramirez-Lee",
        "name=Jo Smith",  # a short word: the whole text for the index
        "email=ashley.ramirez",
        "email=ramirez@mail",
        "email=ashley ramirez",
    ],
)
def test_substring_of_several_words_matches_the_whole_text(reader_client, user_factory, query):
    names = [("Ashley", "Ramirez"), ("Ramirez", "Ashley"), ("Ashley", "Ramirez-Lee")]
    names += [("Ashleyx", "Ramirez"), ("Mary Ashley", "Ramirez"), ("Jo", "Smith"), ("Jon", "Smith")]
    users = [
        user_factory(first_name=first, last_name=last, email_address=f"{first}.{last}@mail.example")
        for first, last in names
    ]
    users.append(user_factory(first_name="Ann", email_address='"ashley ramirez"@mail.example'))
    parameter, _, text = query.partition("=")
    text = text.upper()
    if parameter == "name":
        expected = [u.id for u in users if text in f"{u.first_name} {u.last_name}".upper()]
    else:
        expected = [u.id for u in users if text in u.email_address.upper()]
    assert expected  # each case finds someone
    assert ids(reader_client.get(f"/users?{parameter}={quote(text.lower())}")) == sorted(expected)


def test_words_of_a_substring_are_looked_up_one_by_one(people):
    """The trigram index is asked for each word (no trigram of a word's boundary, such as
    "EY " or " RA"); the whole text is compared on an expression no index holds."""
    from django.db import connection

    from users.filters import UserFilter
    from users.models import User

    queryset = UserFilter({"name": "Ashley Ramirez"}, queryset=User.objects.all()).qs
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
        plan = queryset.explain()
    index_condition = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "users_full_name_trgm" in plan, plan
    assert "%ASHLEY%" in index_condition and "%RAMIREZ%" in index_condition, plan
    assert "ASHLEY RAMIREZ" not in index_condition and "ASHLEY RAMIREZ" in plan, plan


# --- a substring's plan, by its count on a sample (users.selectors.user_substring_plan) ------


@pytest.fixture
def substring_people(user_factory, monkeypatch):
    # The sample is the whole table, however many pages earlier tests' rolled-back rows left.
    monkeypatch.setattr("users.selectors.SUBSTRING_SAMPLE_PAGES", 10**6)
    names = [("Ashley", "Lee"), ("Sasha", "Adams"), ("Bob", "Nash"), ("Ann", "Lee"), ("Bo", "Ng")]
    names += [("ASHLEY", "adams"), ("Ash", "Zed"), ("Tom", "Ash")]
    return [
        user_factory(
            first_name=first,
            last_name=last,
            email_address=f"{first}.{last}{n}@gmail.example",
            created_at=datetime(2020, 1 + n % 3, 1, tzinfo=UTC),
        )
        for n, (first, last) in enumerate(names)
    ]


@pytest.mark.parametrize("walk_cost", [0.0, 10.0**9])  # always walk, always sort
@pytest.mark.parametrize("ordering", ["id", "-created_at", "last_name", "-last_name"])
@pytest.mark.parametrize("page_size", [1, 3])
@pytest.mark.parametrize("query", ["name=ash", "email=gmail&name=ash", "email=ley.lee"])
def test_substring_walked_or_sorted_walks_the_same_pages(
    reader_client, substring_people, monkeypatch, walk_cost, ordering, page_size, query
):
    monkeypatch.setattr(
        "users.selectors.WALK_COST", dict.fromkeys(["id", "created_at", "last_name"], walk_cost)
    )
    params = dict(part.split("=") for part in query.split("&"))

    def matches(user) -> bool:
        name = f"{user.first_name} {user.last_name}".upper()
        return params.get("name", "").upper() in name and (
            params.get("email", "").upper() in user.email_address.upper()
        )

    expected = _expected_order([u for u in substring_people if matches(u)], ordering)
    assert expected
    url = f"/users?{query}&ordering={ordering}&page_size={page_size}"
    assert walk(reader_client, url) == expected


def _plan(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def _list_queries(client, url: str) -> list[str]:
    """The queries of users_user a list request ran, but the samples of its plan's choice."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [
        q["sql"] for q in captured if "users_user" in q["sql"] and "TABLESAMPLE" not in q["sql"]
    ]


@pytest.mark.parametrize("query", ["name=ash&ordering=-id", "email=gmail&ordering=created_at"])
@pytest.mark.parametrize(
    "walk_cost, expected, absent",
    [
        (0.0, "Index Scan", "Bitmap"),
        (10.0**9, "Bitmap Index Scan", "Index Scan Backward"),
    ],
)
def test_substring_plan_is_forced_on_the_planner(
    reader_client, substring_people, monkeypatch, query, walk_cost, expected, absent
):
    """Walked: the ordering's index, the substring a filter on no index. Sorted: the trigram
    index, then a sort (the ordering's key on no index)."""
    from users.filters import ORDERINGS

    monkeypatch.setattr("users.selectors.WALK_COST", dict.fromkeys(ORDERINGS, walk_cost))
    (sql,) = _list_queries(reader_client, f"/users?{query}")
    plan = _plan(sql)
    assert expected in plan and absent not in plan, plan
    assert ("Sort" in plan) == (walk_cost != 0.0), plan
    where = sql.partition(" WHERE ")[2].partition(" ORDER BY ")[0]
    unindexed = "|| COALESCE('', '')" in where or "|| '{}'::int4[]" in where
    assert unindexed == (walk_cost == 0.0), sql  # walked: the filters on no index


def test_name_in_last_name_order_walked_on_the_index_alone(
    reader_client, substring_people, monkeypatch
):
    """Walked in last-name order, a name is checked on users_last_name_names_idx alone (an
    index-only scan: no row read for a user whose name does not match), and the rows of the
    ids found are read by primary key for the other filters."""
    monkeypatch.setattr("users.selectors.WALK_COST", {"last_name": 0.0})
    walked, fetched, *more = _list_queries(
        reader_client, "/users?name=ash&email=gmail&deleted=false&ordering=last_name"
    )
    plan = _plan(walked)
    assert "Index Only Scan using users_last_name_names_idx" in plan, plan
    assert "users_full_name_trgm" not in plan and "Sort" not in plan, plan
    plan = _plan(fetched)
    assert "users_user_pkey" in plan and "users_email_ngrams_gin" not in plan, plan
    assert len(more) % 2 == 0  # further chunks: a walk and a read each


@pytest.mark.parametrize("ordering", ["last_name", "-last_name"])
def test_name_walk_past_its_scan_limit_serves_short_pages_that_lose_nobody(
    reader_client, substring_people, monkeypatch, ordering
):
    """A walk of ids that meets few users passing the other filters stops after its scan
    limit (RECHECK_SCAN_PAGES pages' worth of ids) with a short page and a `next` link past the
    last id walked; following the links finds every user once, in order."""
    monkeypatch.setattr("users.selectors.WALK_COST", {"last_name": 0.0})
    monkeypatch.setattr("users.api.pagination.RECHECK_SCAN_PAGES", 1)
    monkeypatch.setattr("users.selectors.RECHECK_SCAN_PAGES", 1)  # the first walk's cap
    url = f"/users?name=ash&deleted=false&email=ashley&ordering={ordering}&page_size=1"
    seen, pages = walk_pages(reader_client, url)
    expected = [
        u
        for u in substring_people
        if "ASH" in f"{u.first_name} {u.last_name}".upper() and "ASHLEY" in u.email_address.upper()
    ]
    assert seen == _expected_order(expected, ordering)
    assert pages > len(expected)  # short (empty) pages among them


def test_name_in_last_name_order_sorted_when_rare(reader_client, substring_people, monkeypatch):
    monkeypatch.setattr("users.selectors.WALK_COST", {"last_name": 10.0**9})
    (sql,) = _list_queries(reader_client, "/users?name=ash&ordering=last_name")
    plan = _plan(sql)
    assert "users_full_name_trgm" in plan and "users_last_name_names_idx" not in plan, plan


def test_matches_estimate_of_a_small_table_is_exact(substring_people):
    from users.filters import UserFilter
    from users.models import User
    from users.selectors import user_matches_estimate

    queryset = UserFilter({"name": "ash"}, queryset=User.objects.all()).qs
    matches, users = user_matches_estimate(queryset=queryset)
    assert matches == 6 and users >= 6
