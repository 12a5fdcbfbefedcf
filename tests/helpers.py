"""Helpers shared by tests: the CSV header, a cached user, waiting for a condition, and headless
Chromium (Debian's `chromium`, `make system-deps`) driven over the DevTools protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

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


# The users CSV header, written out here on purpose: tests check the code against it.
HEADER = "id,first_name,last_name,email_address,created_at,deleted_at,merged_at,parent_user_id"

# 197 characters that pass every rule as typed, but 385 once the domain is lower-cased ("İ" is
# "i̇", two code points): longer than the email column holds.
LENGTHENING_EMAIL = "ann@" + ".".join(["İ" * 63, "İ" * 63, "İ" * 62]) + ".de"


def cached(user_id: int) -> dict | None:
    """A user's entry in Redis as the API would serve it, None when not cached."""
    from users.cache import cached_user_json

    raw = cached_user_json(user_id)
    return None if raw is None else json.loads(raw)


def make_run(file_name: str, **fields):
    """A run record as publish_csv makes it, for tests that store or queue batches by hand."""
    from ingest.models import IngestRun

    fields = {"status": IngestRun.Status.PUBLISHED, **fields}
    return IngestRun.objects.create(
        file_name=file_name, file_size=1, checksum="x", batch_size=2, **fields
    )


def wait_until(check, timeout: float = 10, message: str = "condition not met in time"):
    """Poll `check` until it returns something true (and return that) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


class Page:
    """A Chromium tab, driven over the DevTools protocol."""

    def __init__(self, websocket) -> None:
        self._ws = websocket
        self._ids = count(1)

    def send(self, method: str, params: dict | None = None) -> dict:
        """Call a DevTools method; its reply (an error reply included) as a dict."""
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        while True:
            reply = json.loads(self._ws.recv(timeout=10))
            if reply.get("id") == message_id:
                return reply

    def evaluate(self, expression: str):
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        # An error reply (the page still loading, say) reads as "nothing yet".
        return reply.get("result", {}).get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def set_file_input(self, selector: str, path: str | Path) -> None:
        """Choose a file in an <input type=file>, as the file dialog would."""
        found = self.send(
            "Runtime.evaluate", {"expression": f"document.querySelector({json.dumps(selector)})"}
        )
        object_id = found["result"]["result"]["objectId"]
        reply = self.send("DOM.setFileInputFiles", {"files": [str(path)], "objectId": object_id})
        assert "error" not in reply, reply


@contextmanager
def chromium(url: str, profile: Path, *, window: tuple[int, int] = (1280, 900)) -> Iterator[Page]:
    """Headless Chromium opened at `url`; yields its tab once it is there."""
    process = subprocess.Popen(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         f"--window-size={window[0]},{window[1]}", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: its helpers go with it
    )  # fmt: skip
    try:
        active_port = profile / "DevToolsActivePort"
        wait_until(active_port.exists, 30, "chromium did not start")
        port = wait_until(lambda: active_port.read_text().split("\n")[0], 5, "no DevTools port")
        targets = wait_until(
            lambda: [
                target
                for target in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                if target["type"] == "page" and target["url"].startswith(url)
            ],
            15,
            "page did not open",
        )
        with ws_connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as websocket:
            yield Page(websocket)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
