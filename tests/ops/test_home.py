"""The landing page at / and the /users/ redirect."""

from __future__ import annotations

import pytest

from ingest.models import IngestRun
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def some_users(db):
    from datetime import UTC, datetime

    User.objects.bulk_create(
        User(
            id=n,
            first_name="Secret",
            last_name=f"Person{n}",
            email_address=f"secret{n}@example.com",
            created_at=datetime(2020, 1, 1, tzinfo=UTC),
        )
        for n in range(1, 4)
    )


def test_landing_page_links_everything_and_counts_without_naming_anyone(client, some_users):
    IngestRun.objects.create(
        file_name="/srv/imports/people.csv",
        file_size=10,
        checksum="0" * 64,
        batch_size=5000,
        status=IngestRun.Status.COMPLETED,
        rows_published=5,
        rows_stored=4,
        rows_rejected=1,
    )
    response = client.get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for link in ('href="/users"', 'href="/api/docs/"', 'href="/users/live"', 'href="/admin/"',
                 'href="/healthz"'):  # fmt: skip
        assert link in page
    assert '<dd id="user-count">3</dd>' in page
    assert "Completed" in page and "4 stored" in page and "1 rejected" in page
    # No user's name or email, and the run's file only for staff.
    assert "Secret" not in page and "example.com" not in page
    assert "people.csv" not in page


def test_landing_page_shows_staff_the_runs_file_and_the_import_page(
    client, django_user_model, some_users
):
    IngestRun.objects.create(
        file_name="upload: people.csv", file_size=10, checksum="0" * 64, batch_size=5000
    )
    client.force_login(django_user_model.objects.create_superuser("boss", password="pw"))
    page = client.get("/").content.decode()
    assert "people.csv" in page
    assert 'href="/admin/ingest/ingestrun/import/"' in page
    assert "Secret" not in page


def test_landing_page_offers_anonymous_visitors_a_login_for_the_api(
    client, django_user_model, plain_static_storage
):
    link = 'href="/api-auth/login/?next=/users"'
    assert link in client.get("/").content.decode()
    client.force_login(django_user_model.objects.create_superuser("boss", password="pw"))
    assert link not in client.get("/").content.decode()


def test_landing_page_without_any_run(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "none yet" in response.content.decode()


@pytest.fixture
def csrf_client():
    """A client whose requests go through CsrfViewMiddleware as a real one's do (Django's test
    client skips the check unless asked)."""
    from django.test import Client

    return Client(enforce_csrf_checks=True)


@pytest.mark.parametrize("method", ["get", "post", "delete"])
@pytest.mark.parametrize(("path", "target"), [("/users/", "/users"), ("/users/5/", "/users/5")])
def test_users_with_a_trailing_slash_redirects_keeping_the_method_and_query(
    csrf_client, method, path, target
):
    response = getattr(csrf_client, method)(f"{path}?name=ann&deleted=false")
    assert response.status_code == 308
    assert response["Location"] == f"{target}?name=ann&deleted=false"
    # For clients that do not follow redirects (curl without -L): where to go, in JSON.
    assert response.json() == {"detail": f"Moved permanently to {target} (no trailing slash)."}


def test_users_list_is_reached_through_the_redirect(client, api_token):
    response = client.get("/users/", follow=True, HTTP_AUTHORIZATION=f"Token {api_token('reader')}")
    assert response.status_code == 200
    assert response.redirect_chain == [("/users", 308)]
    assert "results" in response.json()


def test_token_writes_through_a_trailing_slash_are_not_refused_for_csrf(csrf_client, api_token):
    token = f"Token {api_token('writer')}"
    body = {"first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@example.com"}
    created = csrf_client.post(
        "/users/", body, content_type="application/json", follow=True, HTTP_AUTHORIZATION=token
    )
    assert created.status_code == 201, created.content
    assert created.redirect_chain == [("/users", 308)]
    user_id = created.json()["id"]

    deleted = csrf_client.delete(f"/users/{user_id}/", follow=True, HTTP_AUTHORIZATION=token)
    assert deleted.status_code == 204
    assert deleted.redirect_chain == [(f"/users/{user_id}", 308)]
    assert not User.objects.filter(id=user_id).exists()


def test_writes_to_other_paths_under_users_are_404_not_a_csrf_403(csrf_client, api_token):
    token = f"Token {api_token('writer')}"
    for path in ("/users/abc", "/users/1/x", "/users/nope/"):
        response = csrf_client.post(path, {}, HTTP_AUTHORIZATION=token)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "Not found."}


def test_a_refused_csrf_check_under_users_names_its_cause(csrf_client, api_token):
    # /users/sse is a plain Django view (GET only): a POST meets CsrfViewMiddleware.
    response = csrf_client.post("/users/sse", HTTP_AUTHORIZATION=f"Token {api_token('writer')}")
    assert response.status_code == 403
    assert response.json() == {"detail": "CSRF Failed: CSRF cookie not set."}


def test_other_paths_under_users_stay_json_404(client):
    response = client.get("/users/nope/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
