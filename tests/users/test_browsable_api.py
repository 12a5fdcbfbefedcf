"""The browsable API in a browser's shoes: a refusal says how to log in, the "Log in" link leads
through the admin's login page and back, and JSON clients see none of it."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def browser(plain_static_storage) -> Client:
    return Client()


@pytest.mark.parametrize("path", ["/users", "/users/5"])
def test_an_anonymous_browser_is_offered_a_login(browser, path):
    response = browser.get(path, **HTML)

    assert response.status_code == 401
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    # DRF's own "Log in" link in the navigation bar, and the note above the response.
    assert f"href='/api-auth/login/?next={path}'" in page
    assert f'href="/api-auth/login/?next={path}">Log in</a>' in page
    assert "Authorization: Token &lt;token&gt;" in page


def test_json_clients_keep_the_plain_401(browser):
    response = browser.get("/users")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_the_login_link_leads_through_the_admin_login_and_back(browser, login_account):
    username, password, _ = login_account("reader", staff=True)

    link = browser.get("/api-auth/login/?next=/users%3Fordering%3D-id")
    assert link.status_code == 302
    assert link["Location"] == "/admin/login/?next=/users%3Fordering%3D-id"
    form = browser.get(link["Location"])
    assert form.status_code == 200 and b'id="login-form"' in form.content
    credentials = {"username": username, "password": password, "next": "/users?ordering=-id"}
    logged_in = browser.post(link["Location"], credentials)
    assert logged_in.status_code == 302 and logged_in["Location"] == "/users?ordering=-id"

    page = browser.get("/users", **HTML)
    assert page.status_code == 200
    assert username in page.content.decode()  # the navigation bar's account menu


def test_an_account_without_the_permission_is_told_which_it_lacks(browser, login_account):
    username, _, (cookie, session) = login_account(None, staff=True)
    browser.cookies[cookie] = session

    response = browser.get("/users", **HTML)

    assert response.status_code == 403
    page = response.content.decode()
    assert f"You are logged in as <strong>{username}</strong>" in page
    assert "users.view_user" in page


def test_log_out_returns_to_the_page(browser, login_account):
    _, _, (cookie, session) = login_account("reader", staff=True)
    browser.cookies[cookie] = session
    assert browser.get("/users", **HTML).status_code == 200

    response = browser.post("/api-auth/logout/?next=/users")

    assert response.status_code == 302 and response["Location"] == "/users"
    assert browser.get("/users", **HTML).status_code == 401
