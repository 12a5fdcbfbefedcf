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


def test_landing_page_without_any_run(client):
    response = client.get("/")
    assert response.status_code == 200
    assert "none yet" in response.content.decode()


@pytest.mark.parametrize("method", ["get", "post"])
def test_users_with_a_trailing_slash_redirects_keeping_the_method_and_query(client, method):
    response = getattr(client, method)("/users/?name=ann&deleted=false")
    assert response.status_code == 308
    assert response["Location"] == "/users?name=ann&deleted=false"


def test_users_list_is_reached_through_the_redirect(client, api_token):
    response = client.get("/users/", follow=True, HTTP_AUTHORIZATION=f"Token {api_token('reader')}")
    assert response.status_code == 200
    assert response.redirect_chain == [("/users", 308)]
    assert "results" in response.json()


def test_other_paths_under_users_stay_json_404(client):
    response = client.get("/users/nope/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
