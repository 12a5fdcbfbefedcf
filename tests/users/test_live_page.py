"""/users/live in headless Chromium (Debian's `chromium`), driven over the DevTools protocol, with
the page and the API served by a real uvicorn server process."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from django.contrib.auth.models import Permission

from tests.support.chromium import Page, chromium
from tests.support.waits import wait_until
from users.events import users_ingested

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium (make system-deps)"),
]


@pytest.fixture
def browser_page(live_web_server, tmp_path, login_account):
    """The live page, reached as a browser does: the admin login page first (a staff account
    in the reader role), which then sends it on to /users/live."""
    username, password, _ = login_account("reader", staff=True)
    login_url = f"{live_web_server}/admin/login/?next=/users/live"
    with chromium(login_url, tmp_path / "chromium-profile") as page:
        wait_until(
            lambda: page.evaluate("!!document.getElementById('id_password')"),
            15,
            "login form not shown",
        )
        page.evaluate(
            f"document.getElementById('id_username').value = {json.dumps(username)};"
            f"document.getElementById('id_password').value = {json.dumps(password)};"
            "document.getElementById('login-form').submit(); true"
        )
        wait_until(
            lambda: page.evaluate("location.pathname") == "/users/live",
            15,
            "login did not lead to the live page",
        )
        yield page


def row_text(page: Page, user_id: int) -> str | None:
    return page.evaluate(
        f"(document.querySelector('tr[data-user-id=\"{user_id}\"]') || {{}}).textContent || null"
    )


@pytest.fixture
def api(live_web_server, api_token):
    token = api_token("writer")
    with httpx.Client(base_url=live_web_server, headers={"Authorization": f"Token {token}"}) as c:
        yield c


def test_live_page_shows_users_as_they_come_and_go(browser_page, api):
    page = browser_page
    wait_until(
        lambda: page.evaluate("document.body.dataset.stream") == "open",
        15,
        "the page's EventSource did not open",
    )

    response = api.post(
        "/users",
        json={"first_name": "Lia", "last_name": "Live", "email_address": "lia@example.com"},
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    text = wait_until(lambda: row_text(page, user_id), 10, "created user not shown")
    assert "Lia" in text and "lia@example.com" in text
    assert page.evaluate("document.getElementById('count-created').textContent") == "1"

    assert api.delete(f"/users/{user_id}").status_code == 204
    wait_until(lambda: row_text(page, user_id) is None, 10, "deleted user still shown")
    assert page.evaluate("document.getElementById('count-deleted').textContent") == "1"

    # An import batch: counted in full, only the latest rows are kept on screen.
    batch = [
        json.dumps({"id": 80000 + n, "first_name": f"Imp{n}", "last_name": "Ort",
                    "email_address": f"imp{n}@example.com", "created_at": None}).encode()
        for n in range(120)
    ]  # fmt: skip
    users_ingested(run_id=7, batch=1, users_json=batch)
    wait_until(
        lambda: page.evaluate("document.getElementById('count-imported').textContent") == "120",
        10,
        "import batch not counted",
    )
    assert page.evaluate("document.querySelectorAll('#users tr').length") == 50
    assert "Imp119" in row_text(page, 80119)
    assert row_text(page, 80000) is None


def test_live_page_opens_with_the_newest_users_for_readers_only(
    client, django_user_model, user_factory
):
    users = [user_factory(first_name=f"Newest{n}") for n in range(3)]  # created an hour apart
    reader = django_user_model.objects.create_user("reader", password="pw")
    reader.user_permissions.add(
        Permission.objects.get(codename="view_user", content_type__app_label="users")
    )
    client.force_login(reader)

    response = client.get("/users/live")

    assert response.status_code == 200
    newest = response.context["newest"]
    assert [user["id"] for user in newest[:3]] == [user.id for user in reversed(users)]
    assert 'id="newest-users"' in response.text and "Newest2" in response.text
    assert "Since this page opened" in response.text

    # Without the permission to read users the page is refused; anonymous visitors log in.
    client.force_login(django_user_model.objects.create_user("nobody", password="pw"))
    response = client.get("/users/live")
    assert response.status_code == 403
    assert "Newest" not in response.content.decode()
    client.logout()
    response = client.get("/users/live")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/users/live"
