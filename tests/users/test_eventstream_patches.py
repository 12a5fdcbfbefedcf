"""users.eventstream_patches: the stream runs only on the django-eventstream it was written for,
and nothing of the library publishes events."""

from __future__ import annotations

import re
import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import ROOT
from users import eventstream_patches


def test_the_pinned_django_eventstream_is_the_version_patched():
    pin = re.search(
        r"^django-eventstream==(\S+)", (ROOT / "requirements.txt").read_text(), re.M | re.I
    )
    assert pin is not None, "django-eventstream is not pinned in requirements.txt"
    assert pin[1] == eventstream_patches.PATCHED_VERSION, (
        f"requirements.txt pins django-eventstream {pin[1]}, but users/eventstream_patches.py "
        f"was written for {eventstream_patches.PATCHED_VERSION}: read the patches against the "
        "new release, then update PATCHED_VERSION"
    )
    assert eventstream_patches.installed_version() == eventstream_patches.PATCHED_VERSION


def test_another_django_eventstream_refuses_to_start(monkeypatch):
    monkeypatch.setattr(eventstream_patches, "installed_version", lambda: "9.9.9")
    with pytest.raises(ImproperlyConfigured, match="9.9.9"):
        eventstream_patches.apply()


@pytest.mark.django_db
def test_events_are_appended_to_the_history_and_published_nowhere(redis_client, settings):
    """Web processes read events from the history: nothing goes onto pub/sub (the library's
    send_event would publish every event, ~1 MB ingest batches included, to every process)."""
    from users.events import user_created
    from users.sse import RedisStreamStorage

    channel = settings.EVENTSTREAM_USERS_CHANNEL
    pubsub = redis_client.pubsub()
    pubsub.subscribe("events_channel")  # the library's (shared by everyone on this Redis)
    try:
        assert pubsub.get_message(timeout=1)["type"] == "subscribe"
        before = RedisStreamStorage().get_current_id(channel)
        user_created({"id": 5})
        assert RedisStreamStorage().get_current_id(channel) == before + 1
        deadline = time.monotonic() + 0.5
        while (remaining := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=remaining)
            assert message is None or channel.encode() not in message["data"]
    finally:
        pubsub.close()
