"""Every change the project makes to django-eventstream's own behaviour, in one place, applied
by UsersConfig.ready() and only on the version it was written against.

- The listener manager: the library's per-process registry of open streams is replaced by
  users.sse.SupervisedListenerManager (its Redis subscriber survives outages and fills gaps from
  the history). The library reads it through `views.listener_manager` (kicks; local delivery).
- `eventstream.publish_event`: send_event formats every event for a GRIP proxy (Pushpin),
  escaping it one character at a time in Python, even when no proxy is configured: about 0.3 s
  of a worker's CPU per 1 MB ingest batch event, more than storing the batch. Without a proxy
  there is nothing to publish to, so it is skipped.

The stream itself (users.sse) is our own view built from the library's parts (storage and
channel-manager settings, Listener, the listener manager), not a patch. A new django-eventstream
release must be read against this module before PATCHED_VERSION (and requirements.txt) move;
tests/users/test_eventstream_patches.py fails until both agree.
"""

from __future__ import annotations

import importlib.metadata

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PATCHED_VERSION = "5.3.4"


def installed_version() -> str:
    return importlib.metadata.version("django-eventstream")


def apply() -> None:
    """Apply the patches (idempotent); refuse to start on another django-eventstream."""
    version = installed_version()
    if version != PATCHED_VERSION:
        raise ImproperlyConfigured(
            f"django-eventstream {version} is installed; users/eventstream_patches.py was "
            f"written for {PATCHED_VERSION}: check it against the new release, then update "
            "PATCHED_VERSION."
        )
    install_listener_manager()
    _skip_grip_publishing_without_a_proxy()


def install_listener_manager():
    """Put users.sse.SupervisedListenerManager in place of the library's (idempotent)."""
    from django_eventstream import views as eventstream_views

    from users.sse import SupervisedListenerManager

    manager = eventstream_views.listener_manager
    if not isinstance(manager, SupervisedListenerManager):
        manager = SupervisedListenerManager()
        eventstream_views.listener_manager = manager
    return manager


def _skip_grip_publishing_without_a_proxy() -> None:
    from django_eventstream import eventstream as eventstream_module

    if getattr(eventstream_module.publish_event, "grip_skipped", False):
        return
    library_publish_event = eventstream_module.publish_event

    def publish_event_to_grip_proxy(*args, **kwargs) -> None:
        if getattr(settings, "GRIP_URL", None) or getattr(settings, "GRIP_PROXIES", None):
            library_publish_event(*args, **kwargs)

    publish_event_to_grip_proxy.grip_skipped = True
    eventstream_module.publish_event = publish_event_to_grip_proxy
