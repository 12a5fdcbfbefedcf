"""Log wiring: request ids, Celery task context and the JSON / text formatters.

Every log line emitted while a request is handled carries its request id (taken from the
`X-Request-ID` header or generated, and returned in the response header); every line emitted
by a Celery task carries the task's ingest run id and batch number. Both travel in contextvars,
so they follow the code through `sync_to_async` threads and never leak between concurrent
requests (each ASGI request runs in its own asyncio task, with its own context copy).
"""

from __future__ import annotations

import inspect
import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.utils.decorators import sync_and_async_middleware
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
# A client-supplied id is echoed into logs and headers: accept only short, plain tokens.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
task_context_var: ContextVar[dict[str, Any] | None] = ContextVar("task_context", default=None)

# Task arguments copied onto every log line of the task when the task takes them.
TASK_CONTEXT_ARGUMENTS = ("run_id", "batch")


def _valid_or_new(supplied: str | None) -> str:
    if supplied and _VALID_REQUEST_ID.match(supplied):
        return supplied
    return uuid.uuid4().hex


def request_id_asgi(app):
    """Outermost ASGI wrapper: give every HTTP request an id, also those answered ahead of
    Django (users/api/asgi.py), bind it to the request's context and return it as a header."""
    header_name = REQUEST_ID_HEADER.lower().encode()

    async def application(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        supplied = next((v for k, v in scope["headers"] if k == header_name), None)
        request_id = _valid_or_new(supplied.decode("latin-1") if supplied else None)
        scope["request_id"] = request_id
        request_id_var.set(request_id)
        encoded = request_id.encode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (header_name, encoded)]
            await send(message)

        return await app(scope, receive, send_with_id)

    return application


@sync_and_async_middleware
def request_id_middleware(get_response):
    """Bind the request id to the request's context and return it in the response header.

    Async-capable so async views stay on the event loop. The context variable is set, not reset:
    Django's own `django.request` lines are written after the middleware chain returns, and under
    ASGI each request has its own context, so nothing carries over to another request.
    Under ASGI the id comes from `request_id_asgi`, which also sets the response header.
    """
    if iscoroutinefunction(get_response):

        async def middleware(request):
            from_asgi = _bind_request_id(request)
            return _with_request_id(request, await get_response(request), from_asgi)

    else:

        def middleware(request):
            from_asgi = _bind_request_id(request)
            return _with_request_id(request, get_response(request), from_asgi)

    return middleware


def _bind_request_id(request) -> bool:
    scope = getattr(request, "scope", None)
    request_id = scope.get("request_id") if scope else None
    from_asgi = request_id is not None
    if not from_asgi:
        request_id = _valid_or_new(request.headers.get(REQUEST_ID_HEADER))
    request_id_var.set(request_id)
    request.request_id = request_id
    return from_asgi


def _with_request_id(request, response, from_asgi: bool):
    if not from_asgi:
        response[REQUEST_ID_HEADER] = request.request_id
    return response


def bind_task_context(task, args: tuple | None, kwargs: dict | None) -> None:
    """Put the task's run id and batch number (when it takes them) on its log lines."""
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except TypeError:
        task_context_var.set(None)
        return
    context = {
        name: bound.arguments[name] for name in TASK_CONTEXT_ARGUMENTS if name in bound.arguments
    }
    task_context_var.set(context or None)


def clear_task_context() -> None:
    task_context_var.set(None)


class ContextFilter(logging.Filter):
    """Copy the request id and task context onto each record (attached to handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
        task_context = task_context_var.get()
        if task_context:
            for name, value in task_context.items():
                setattr(record, name, value)
        return True


class WithoutTraceback(logging.Filter):
    """Drop the traceback of a record: for errors a client caused, which Django logs with
    one (a `Host` outside ALLOWED_HOSTS is `django.security.DisallowedHost` at ERROR, with
    exc_info). The message names what was wrong; a traceback only hides it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _without_query(target: str) -> str:
    return target.split("?", 1)[0]


class RequestWithoutQuery(logging.Filter):
    """Keep query strings out of the logs: they hold what clients search for (emails, names)
    and cursors. Attached to the handler, so it sees every line it writes:

    - `django.request` / `django.security.*` lines carry the request in `extra`; a JSON line
      would print its repr, `<ASGIRequest: GET '/users?email=...'>`. It becomes "GET /users".
    - `django.server` (runserver) writes the request line, "GET /users?email=... HTTP/1.1";
      its 4xx and 5xx lines are dropped, since `django.request` logs those already.
    - `uvicorn.access` (off in scripts/web.sh) writes the path with its query.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "path") and hasattr(request, "method"):
            record.request = f"{request.method} {request.path}"
        if record.name == "django.server":
            if getattr(record, "status_code", 0) >= 400:
                return False
            record.request = None  # the socket, not worth a line
            if record.args and isinstance(record.args[0], str):
                method, _, rest = record.args[0].partition(" ")
                target, _, version = rest.partition(" ")
                line = f"{method} {_without_query(target)} {version}".strip()
                record.args = (line, *record.args[1:])
        elif record.name == "uvicorn.access" and isinstance(record.args, tuple):
            if len(record.args) >= 3 and isinstance(record.args[2], str):
                record.args = (*record.args[:2], _without_query(record.args[2]), *record.args[3:])
        return True


class TextFormatter(logging.Formatter):
    """Human-readable lines for development, with the context appended when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in ("request_id", *TASK_CONTEXT_ARGUMENTS)
            if hasattr(record, name)
        )
        return f"{line} [{context}]" if context else line


def json_formatter() -> JsonFormatter:
    """One JSON object per line: timestamp, level, logger, message, then any context."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,  # ISO 8601 in UTC, with microseconds
    )
