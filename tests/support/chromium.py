"""Headless Chromium (Debian's `chromium`, `make system-deps`) driven over the DevTools protocol,
for the tests of pages that run JavaScript (the live page, the admin's import)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import httpx
from websockets.sync.client import connect as ws_connect

from tests.support.waits import wait_until

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
