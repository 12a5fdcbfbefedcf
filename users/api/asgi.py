"""The hot read, `GET /users/{id}` from a JSON client, answered ahead of Django.

Django's ASGI handler runs each request's middleware hooks and signals through sync_to_async,
in a thread started per request: ~1k req/s here whatever the view does. This wrapper answers
that one request shape straight from the ASGI scope (users.api.fast_read.read_user: one Redis
round trip, PostgreSQL on a miss) and hands every other request, unchanged, to Django, where
UserViewSet answers it with the same decisions (users.refusals). It is the only fast door: the
OpenAPI schema documents it through the viewset's `retrieve`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from users.api.fast_read import JSON_HEADERS, fast_path_serves, read_user
from users.client_address import client_address
from users.refusals import SERVER_ERROR, error_body
from users.selectors import MAX_USER_ID

logger = logging.getLogger(__name__)

_PATH = re.compile(r"/users/([0-9]{1,19})")
ROUTE = "/users/<int:pk>"
_SERVER_ERROR_BODY = error_body(SERVER_ERROR)
_HEADERS = [(b"content-type", b"application/json")] + [
    (name.lower().encode(), value.encode()) for name, value in JSON_HEADERS.items()
]


def _allowed_hosts() -> list[str]:
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:
        return [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def _secure_enough(scope, headers: dict[bytes, bytes]) -> bool:
    """False when SecurityMiddleware would redirect this request to HTTPS: Django answers it."""
    if not settings.SECURE_SSL_REDIRECT or scope.get("scheme") == "https":
        return True
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        name, secure_value = proxy_header
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode()
        value = headers.get(header, b"").decode("latin-1").split(",")[0].strip()
        return value == secure_value
    return False


def fast_user_reads(django_app, *, observe: Callable[[str, str, int, float], None] | None = None):
    """Wrap Django's ASGI application; `observe(route, method, status, seconds)` is called
    for each request answered here (metrics), since Django's middleware never sees them."""
    session_cookie = settings.SESSION_COOKIE_NAME.encode()

    async def application(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            return await django_app(scope, receive, send)
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return await django_app(scope, receive, send)
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        authorization = authorization.decode("latin-1") if authorization is not None else None
        host = headers.get(b"host", b"").decode("latin-1")
        domain, _ = split_domain_port(host)
        user_id = int(match[1])
        serves = (
            0 < user_id <= MAX_USER_ID
            and domain
            and validate_host(domain, _allowed_hosts())
            and _secure_enough(scope, headers)
            and fast_path_serves(
                method="GET",
                has_query=False,
                accept=headers.get(b"accept", b"").decode("latin-1"),
                session=session_cookie in headers.get(b"cookie", b""),
            )
        )
        if not serves:  # Django answers: browsable API, sessions, bad hosts, HTTPS redirects
            return await django_app(scope, receive, send)
        started = time.perf_counter()
        client = scope.get("client")
        forwarded = headers.get(b"x-forwarded-for")
        address = client_address(
            forwarded_for=forwarded.decode("latin-1") if forwarded else None,
            remote_addr=client[0] if client else None,
        )
        try:
            status, body, extra = await read_user(
                user_id, authorization=authorization, address=address, release_connection=True
            )
        except Exception:
            logger.exception("api: unhandled error reading user %s", user_id)
            status, body, extra = 500, _SERVER_ERROR_BODY, {}
        response_headers = _HEADERS
        if extra:
            response_headers = _HEADERS + [
                (k.lower().encode(), v.encode()) for k, v in extra.items()
            ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
        if observe is not None:
            observe(ROUTE, "GET", status, time.perf_counter() - started)

    return application
