"""users.eventstream_patches: applied at start-up, and only on the django-eventstream it was
written for."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django_eventstream import eventstream as eventstream_module
from django_eventstream import views as eventstream_views

from tests.conftest import ROOT
from users import eventstream_patches
from users.sse import SupervisedListenerManager


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


def test_patches_are_applied_at_start_up():
    assert isinstance(eventstream_views.listener_manager, SupervisedListenerManager)
    assert getattr(eventstream_module.publish_event, "grip_skipped", False)
