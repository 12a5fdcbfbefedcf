"""The middleware chain (settings.MIDDLEWARE): async all the way under ASGI, sync under WSGI, and
static files served by whitenoise through either."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import AsyncClient, Client, override_settings

STATIC_FILE = "/static/admin/css/base.css"


@pytest.mark.parametrize("handler_class", [ASGIHandler, WSGIHandler])
def test_no_middleware_is_adapted_to_the_other_mode(caplog, handler_class):
    # Django logs "Synchronous handler adapted for middleware ..." (or asynchronous) for every
    # middleware that cannot run in the handler's mode: under ASGI a sync-only one would push
    # every view after it, async views included, into a thread. (Logged with DEBUG on.)
    caplog.set_level(logging.DEBUG, logger="django.request")

    with override_settings(DEBUG=True):
        handler_class()

    adapted = [r.getMessage() for r in caplog.records if " adapted for " in r.getMessage()]
    assert adapted == []


def _sync_get():
    return Client().get


def _async_get():
    return async_to_sync(AsyncClient().get)


@pytest.mark.parametrize("make_get", [_sync_get, _async_get], ids=["sync", "async"])
@pytest.mark.parametrize("autorefresh", [False, True], ids=["files", "autorefresh"])
def test_static_files_are_served_in_both_modes(db, make_get, autorefresh):
    # Finders stand in for collectstatic; the middleware reads these settings when it is built
    # (with a client's first request).
    with override_settings(WHITENOISE_USE_FINDERS=True, WHITENOISE_AUTOREFRESH=autorefresh):
        get = make_get()
        response = get(STATIC_FILE)

        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/css")
        assert b"".join(response.streaming_content)
        assert get("/healthz").status_code == 200
