"""The Django admin manages users through the same services as the API: its edits and deletes
refresh the cache and reach the SSE stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.conf import settings

from users import cache
from users.models import User
from users.payloads import user_payload
from users.stream.history import RedisStreamStorage


@pytest.fixture
def admin_client(client, django_user_model, plain_static_storage):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    return client


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
