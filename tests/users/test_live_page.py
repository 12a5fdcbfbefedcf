"""/users/live in headless Chromium (Debian's `chromium`), driven over the DevTools protocol, with
the page and the API served by a real uvicorn server process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from itertools import count

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.processes import WebServer
from users.events import users_ingested

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium (make system-deps)"),
]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def wait_until(check, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


@pytest.fixture
def web_server(django_db_setup, tmp_path):
    server = WebServer(tmp_path / "web.log", graceful_timeout=5)
    yield server.base
    server.stop()


class Page:
    """A Chromium tab, evaluated into over the DevTools protocol."""

    def __init__(self, websocket) -> None:
        self._ws = websocket
        self._ids = count(1)

    def evaluate(self, expression: str):
        message_id = next(self._ids)
        self._ws.send(
            json.dumps(
                {
                    "id": message_id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
        )
        while True:
            reply = json.loads(self._ws.recv(timeout=10))
            if reply.get("id") == message_id:
                # An error reply (the page still loading, say) reads as "nothing yet".
                return reply.get("result", {}).get("result", {}).get("value")


@pytest.fixture
def browser_page(web_server, tmp_path, login_account):
    """The live page, reached as a browser does: the admin login page first (a staff account
    in the reader role), which then sends it on to /users/live."""
    username, password, _ = login_account("reader", staff=True)
    profile = tmp_path / "chromium-profile"
    login_url = f"{web_server}/admin/login/?next=/users/live"
    process = subprocess.Popen(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", login_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: its helpers go with it
    )
    try:
        active_port = profile / "DevToolsActivePort"
        wait_until(active_port.exists, 30, "chromium did not start")
        port = wait_until(lambda: active_port.read_text().split("\n")[0], 5, "no DevTools port")
        targets = wait_until(
            lambda: [
                target
                for target in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                if target["type"] == "page" and "/admin/login/" in target["url"]
            ],
            15,
            "login page did not open",
        )
        with ws_connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as websocket:
            page = Page(websocket)
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
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def row_text(page: Page, user_id: int) -> str | None:
    return page.evaluate(
        f"(document.querySelector('tr[data-user-id=\"{user_id}\"]') || {{}}).textContent || null"
    )


@pytest.fixture
def api(web_server, api_token):
    token = api_token("writer")
    with httpx.Client(base_url=web_server, headers={"Authorization": f"Token {token}"}) as c:
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
                    "email_address": f"imp{n}@example.com", "created_at": None})
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
