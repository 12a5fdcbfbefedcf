"""Errors of the users API as JSON, whatever went wrong, in one shape per status:

- 400: `{"<field or parameter>": ["message", ...]}`; what concerns the request as a whole (a body
  that is not JSON, not an object, nested too deeply; a bad Host header) is under
  `non_field_errors`, DRF's key for it.
- every other status: `{"detail": "message"}`.

Anything unexpected becomes a logged 500 instead of Django's HTML error page."""

from __future__ import annotations

import logging

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.utils.decorators import sync_and_async_middleware
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

NOT_FOUND = "Not found."
SERVER_ERROR = "Internal server error."
QUERY_TIMEOUT = "The query took too long and was cancelled; narrow it with more selective filters."


class QueryTimedOut(APIException):
    """503: PostgreSQL cancelled the read at API_QUERY_TIMEOUT_MS (users.selectors.bounded_read).
    Not the client's error as such, and retrying the same query will not help; narrowing it will."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = QUERY_TIMEOUT
    default_code = "query_timeout"


def api_exception_handler(exc, context) -> Response:
    if isinstance(exc, RequestDataTooBig):  # behind the ASGI limit, only without it (WSGI, tests)
        return Response(
            {"detail": f"Request body too large: at most {settings.API_MAX_BODY_BYTES} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("api: unhandled error", exc_info=exc)
        response = Response({"detail": SERVER_ERROR}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    elif response.status_code == status.HTTP_400_BAD_REQUEST:
        response.data = bad_request_body(response.data)
    return response


def bad_request_body(data) -> dict:
    """The 400 shape: a map of names to lists of messages. DRF gives `{"detail": ...}` for a
    body it cannot parse, and a bare list for a ValidationError raised without a field."""
    if isinstance(data, dict) and set(data) == {"detail"}:
        data = [data["detail"]]
    if isinstance(data, list | str):
        return {api_settings.NON_FIELD_ERRORS_KEY: data if isinstance(data, list) else [data]}
    return data


def not_found(request, *args, **kwargs) -> JsonResponse:
    """Any other path under /users (a non-numeric id, say): 404 in JSON."""
    return JsonResponse({"detail": NOT_FOUND}, status=404)


@sync_and_async_middleware
def json_errors_middleware(get_response):
    """Errors raised outside the views under /users (a Host header outside ALLOWED_HOSTS, a
    failing middleware) come back from Django as HTML pages (its debug page with DEBUG on);
    turn those into `{"detail": ...}` with the same status. DRF's own responses (the browsable
    API included) and everything outside /users pass untouched."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            return _as_json_error(request, await get_response(request))

    else:

        def middleware(request):
            return _as_json_error(request, get_response(request))

    return middleware


_DETAILS = {400: "Bad request.", 403: "Permission denied.", 404: NOT_FOUND, 500: SERVER_ERROR}


def _as_json_error(request, response):
    if (
        response.status_code < 400
        or isinstance(response, Response)
        or not (request.path == "/users" or request.path.startswith("/users/"))
        or not response.get("Content-Type", "").startswith("text/html")
    ):
        return response
    detail = _DETAILS.get(response.status_code, f"{response.reason_phrase}.")
    if response.status_code == 400:
        return JsonResponse(bad_request_body(detail), status=400)
    return JsonResponse({"detail": detail}, status=response.status_code)
