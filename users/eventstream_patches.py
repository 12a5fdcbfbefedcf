"""What the project takes from django-eventstream, checked at start-up by UsersConfig.ready():
only the version it was written against runs.

Nothing of the library is patched. The stream (users.sse) is our own view built from the
library's parts, some of them internal: `views.Listener` and `views.ListenerManager` (the
registry of a process's open streams, with its queue limit `views.MAX_PENDING`), `event.Event`,
`storage.StorageBase` / `EventDoesNotExist`, and the SSE encoders of `utils`. Events do not go
through the library's `send_event` (which publishes each event on Redis pub/sub and formats it
for a GRIP proxy): users.events appends them to the history, and each web process reads them
from there. A new django-eventstream release must be read against users.sse before
PATCHED_VERSION (and requirements.txt) move; tests/users/test_eventstream_patches.py fails until
both agree.
"""

from __future__ import annotations

import importlib.metadata

from django.core.exceptions import ImproperlyConfigured

PATCHED_VERSION = "5.3.4"


def installed_version() -> str:
    return importlib.metadata.version("django-eventstream")


def apply() -> None:
    """Refuse to start on another django-eventstream than the one users.sse was written for."""
    version = installed_version()
    if version != PATCHED_VERSION:
        raise ImproperlyConfigured(
            f"django-eventstream {version} is installed; users/sse.py was written for "
            f"{PATCHED_VERSION}: check it against the new release (see "
            "users/eventstream_patches.py), then update PATCHED_VERSION."
        )
