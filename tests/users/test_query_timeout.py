"""Reads a client shapes (GET /users, the users admin list) run under API_QUERY_TIMEOUT_MS: past
it PostgreSQL cancels the query and the client gets a 503 with a message, logged as one line
naming the parameters given, never their values."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.support.environment import database_url

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def users_table_locked() -> Iterator[None]:
    """Another session holds the users table exclusively, so a read of it waits (and the wait
    counts towards statement_timeout). Released on leaving, or after 10 s whatever happens, so
    a read that is not bounded fails the test rather than hanging it."""
    holder = psycopg.connect(database_url())
    holder.execute("LOCK TABLE users_user IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(10, holder.rollback)
    release.start()
    try:
        yield
    finally:
        release.cancel()
        holder.rollback()
        holder.close()


def shape_lines(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and "cancelled" in r.msg]


def test_list_past_the_timeout_is_a_503_logged_with_its_shape_only(
    reader_client, user_factory, settings, caplog
):
    from users.refusals import QUERY_TIMEOUT

    user_factory(last_name="Smith")
    settings.API_QUERY_TIMEOUT_MS = 200
    with users_table_locked():
        response = reader_client.get("/users?last_name=Smith&ordering=last_name")
    assert response.status_code == 503
    assert response.json() == {"detail": QUERY_TIMEOUT}
    (line,) = shape_lines(caplog, "users.api.views")
    assert "after 200 ms" in line and "parameters: last_name,ordering" in line
    assert "Smith" not in line
    assert not [r for r in caplog.records if r.name == "django.request"], caplog.text
    # The limit ended with the transaction: the next request on the connection just works.
    assert reader_client.get("/users?last_name=Smith").status_code == 200


def test_list_under_the_timeout_answers(reader_client, user_factory, settings):
    user_factory.create_batch(3)
    settings.API_QUERY_TIMEOUT_MS = 200
    assert len(reader_client.get("/users").json()["results"]) == 3


def test_admin_list_past_the_timeout_is_a_503_page(admin_client, settings, caplog):
    client = admin_client
    settings.API_QUERY_TIMEOUT_MS = 200
    with users_table_locked():
        response = client.get("/admin/users/user/", {"q": "secret-name", "o": "3"})
    assert response.status_code == 503
    assert "took too long" in response.content.decode()
    (line,) = shape_lines(caplog, "users.admin")
    assert "parameters: o,q" in line and "secret-name" not in line
    assert client.get("/admin/users/user/").status_code == 200
