"""Searching encrypted addresses (users.email_index): the `email` filter's candidates from the
n-gram index are decrypted and checked before they are shown, in the API's pages and the
admin's; `email_address` by digest; substring search can be turned off."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.support.pages import ids
from tests.support.pages import walk_pages as walk
from users.models import User

LIST = "/admin/users/user/"


@pytest.fixture
def false_candidates(user_factory):
    """Addresses holding every trigram of "abcd" ("ABC", "BCD") but not "abcd", around real
    matches: the n-gram index returns all of them, only the real ones are matches."""
    made = []
    for n in range(12):
        made.append(user_factory(email_address=f"xabc.bcd{n}@example.com"))
        if n % 3 == 0:
            made.append(user_factory(email_address=f"Abcd{n}@example.com"))
    return made


def matching(users, text: str) -> list[int]:
    return sorted(u.id for u in users if text.upper() in u.email_address.upper())


@pytest.mark.parametrize("page_size", [1, 2, 50])
def test_email_candidates_are_checked_and_pages_filled(reader_client, false_candidates, page_size):
    expected = matching(false_candidates, "abcd")
    assert len(expected) == 4
    served, _ = walk(reader_client, f"/users?email=abcd&page_size={page_size}")
    assert served == expected


def test_a_page_of_mostly_false_candidates_is_served_short_and_goes_on(
    reader_client, false_candidates, monkeypatch
):
    # One page's worth of candidates read per page at most: pages come short (some empty),
    # each with a link past the candidates it read, and together they hold every match once.
    monkeypatch.setattr("users.api.pagination.RECHECK_SCAN_PAGES", 1)
    served, pages = walk(reader_client, "/users?email=abcd&page_size=2")
    assert served == matching(false_candidates, "abcd")
    assert pages > len(served) // 2 + 1


def test_previous_links_of_checked_pages(reader_client, false_candidates):
    expected = matching(false_candidates, "abcd")
    first = reader_client.get("/users?email=abcd&page_size=2").json()
    second = reader_client.get(first["next"]).json()
    assert [u["id"] for u in second["results"]] == expected[2:4]
    back = reader_client.get(second["previous"]).json()
    assert [u["id"] for u in back["results"]] == expected[:2]


@pytest.mark.parametrize("ordering", ["last_name", "-created_at", "-id"])
def test_checked_candidates_under_every_ordering(reader_client, false_candidates, ordering):
    served, _ = walk(reader_client, f"/users?email=ABCD&ordering={ordering}&page_size=1")
    assert sorted(served) == matching(false_candidates, "abcd")


def test_exact_address_by_digest_case_insensitively(reader_client, user_factory):
    user = user_factory(email_address="Ada.Lovelace@Example.com")
    user_factory(email_address="ada.lovelace@example.org")
    assert ids(reader_client.get("/users?email_address=ADA.LOVELACE%40example.COM")) == [user.id]
    assert ids(reader_client.get("/users?email_address=ada.lovelace%40example")) == []


def test_the_table_holds_a_token_and_the_api_shows_the_address(reader_client, user_factory):
    user = user_factory(email_address="Ada.Lovelace@example.com")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT email_address, email_digest, email_ngrams, email_index_key FROM users_user "
            "WHERE id = %s",
            [user.id],
        )
        stored, digest, ngrams, index_key = cursor.fetchone()
    assert stored.startswith("v1.") and "Lovelace" not in stored and "example" not in stored
    assert len(bytes(digest)) == 16 and ngrams and index_key
    body = reader_client.get(f"/users/{user.id}").json()
    assert body["email_address"] == "Ada.Lovelace@example.com"
    assert User.objects.get(id=user.id).email_address == "Ada.Lovelace@example.com"


def test_substring_search_turned_off_is_a_400_naming_the_parameter(
    reader_client, user_factory, settings
):
    settings.EMAIL_SUBSTRING_SEARCH = False
    user = user_factory(email_address="ada@example.com")
    response = reader_client.get("/users?email=example")
    assert response.status_code == 400
    assert "turned off" in str(response.json()["email"])
    assert ids(reader_client.get("/users?email_address=ada%40example.com")) == [user.id]


def test_admin_search_checks_email_candidates(admin_client, false_candidates):
    response = admin_client.get(LIST, {"q": "abcd"})
    assert response.status_code == 200
    listed = sorted(user.id for user in response.context["cl"].result_list)
    assert listed == matching(false_candidates, "abcd")
    assert response.context["cl"].result_count == 4


def test_admin_search_pages_hold_only_checked_rows(admin_client, false_candidates, monkeypatch):
    monkeypatch.setattr("users.admin.UserAdmin.list_per_page", 2)
    pages = []
    for page in (1, 2):
        response = admin_client.get(LIST, {"q": "abcd", "p": page})
        assert response.status_code == 200
        pages += [user.id for user in response.context["cl"].result_list]
    assert pages == matching(false_candidates, "abcd")


def test_admin_search_finds_names_and_addresses(admin_client, user_factory):
    by_name = user_factory(first_name="Abcdef", email_address="zz@example.com")
    by_address = user_factory(email_address="abcdef@example.com")
    user_factory(email_address="abc.def@example.com")
    response = admin_client.get(LIST, {"q": "ABCDE"})
    listed = sorted(user.id for user in response.context["cl"].result_list)
    assert listed == sorted([by_name.id, by_address.id])


def test_admin_search_without_substring_search_finds_whole_addresses(
    admin_client, user_factory, settings
):
    settings.EMAIL_SUBSTRING_SEARCH = False
    user = user_factory(first_name="Zed", email_address="whole.address@example.com")
    by_name = user_factory(first_name="Wholesome", email_address="w@example.com")

    def listed(text):
        response = admin_client.get(LIST, {"q": text})
        return sorted(u.id for u in response.context["cl"].result_list)

    assert listed("Whole.Address@example.com") == [user.id]
    assert listed("whole") == [by_name.id]  # names only: no address piece


def test_a_text_longer_than_any_address_finds_nothing(reader_client, user_factory):
    user_factory(email_address="a@example.com")
    assert ids(reader_client.get("/users", {"email": "example" * 40})) == []


def test_a_lookup_on_the_encrypted_column_is_refused_not_silently_empty(user_factory):
    from django.core.exceptions import FieldError

    user_factory(email_address="ada@example.com")
    with pytest.raises(FieldError, match="email_address is encrypted"):
        User.objects.filter(email_address="ada@example.com").exists()
    with pytest.raises(FieldError, match="icontains"):
        list(User.objects.filter(email_address__icontains="ada"))
    assert User.objects.filter(email_address__isnull=False).count() == 1
