"""users.stream's boundaries: who imports what, and the SSE text it writes itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support.environment import ROOT, TEST_ENV
from users.stream.encoding import sse_text, stream_closed, stream_reset


def _modules_loaded_by(code: str) -> set[str]:
    """The users.stream modules a fresh process has imported after running `code`."""
    script = (
        "import django, sys; django.setup(); "
        + code
        + "; print(' '.join(m for m in sys.modules if m.startswith('users.stream')))"
    )
    env = {
        **TEST_ENV,
        # this run's secret and email keys (debug is off, so settings require them)
        **{
            name: os.environ[name]
            for name in ("DJANGO_SECRET_KEY", "EMAIL_ENCRYPTION_KEYS", "EMAIL_BLIND_INDEX_KEY")
        },
        "DJANGO_SETTINGS_MODULE": "viswals.settings",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_sending_events_does_not_load_the_stream_views():
    # users.events is called from services and Celery workers: it needs the history, not the
    # views (and their imports of the API's modules).
    loaded = _modules_loaded_by(
        "from users import events; from users.stream.history import RedisStreamStorage"
    )
    assert "users.stream.history" in loaded
    assert "users.stream.views" not in loaded and "users.stream.streaming" not in loaded


def test_the_uvicorn_protocol_takes_its_scope_extensions_from_the_stream():
    loaded = _modules_loaded_by("import viswals.http_protocol")
    assert loaded == {"users.stream", "users.stream.extensions"}


def test_django_eventstream_is_not_installed_or_imported():
    from django.conf import settings

    assert "django_eventstream" not in settings.INSTALLED_APPS
    requirements = (ROOT / "requirements.txt").read_text() + (ROOT / "requirements.in").read_text()
    assert "django-eventstream" not in requirements.lower()


def test_event_text_strips_line_breaks_from_type_and_id_and_splits_data_lines():
    text = sse_text("user.\r\ncreated\0", "a\nb\r\nc", event_id="users:\n7")
    assert text == "event: user.created\nid: users:7\ndata: a\ndata: b\ndata: c\n\n"
    assert sse_text("x", "") == "event: x\ndata: \n\n"


def test_stream_notices_carry_json_data():
    assert stream_reset("a b", "e1", 9) == (
        b'event: stream-reset\nid: a%20b@e1:9\ndata: {"channels": ["a b"]}\n\n'
    )
    assert stream_closed(("permission_denied", "No.")) == (
        b'event: stream-closed\ndata: {"reason": "permission_denied", "detail": "No."}\n\n'
    )


@pytest.mark.django_db
def test_events_are_appended_to_the_history_and_published_nowhere(redis_client, settings):
    """Web processes read events from the history: nothing goes onto pub/sub (publishing every
    event, ~1 MB ingest batches included, to every process is what the stream avoids)."""
    from users.events import user_created
    from users.stream.history import RedisStreamStorage

    channel = settings.STREAM_CHANNEL
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("*")
    try:
        assert pubsub.get_message(timeout=1)["type"] == "psubscribe"
        before = RedisStreamStorage().get_current_id(channel)
        user_created({"id": 5})
        assert RedisStreamStorage().get_current_id(channel) == before + 1
        deadline = time.monotonic() + 0.5
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            assert message is None or channel.encode() not in message["data"]
    finally:
        pubsub.close()
