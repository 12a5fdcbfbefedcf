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
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousMultipartForm,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler

from users.refusals import (
    BAD_REQUEST,
    FORBIDDEN,
    MALFORMED_MULTIPART,
    NOT_FOUND,
    SERVER_ERROR,
    body_too_large_detail,
    csrf_failed_detail,
    error_data,
    not_authenticated_detail,
    too_many_fields_detail,
    too_many_files_detail,
)

logger = logging.getLogger(__name__)


def api_exception_handler(exc, context) -> Response:
    refusal = request_data_refusal(exc)
    if refusal is not None:
        # JSON whatever the view renders (the schema view's YAML, the browsable API's HTML):
        # the same body as on every other path.
        request = context.get("request")
        if request is not None:
            request.accepted_renderer, request.accepted_media_type = (
                JSONRenderer(),
                "application/json",
            )
        return Response(refusal[1], status=refusal[0])
    response = exception_handler(exc, context)
    if isinstance(exc, NotAuthenticated) and "request" in context:
        # "Not provided" is wrong for a client that sent `Authorization: Bearer ...`.
        authorization = context["request"].META.get("HTTP_AUTHORIZATION")
        response.data = error_data(not_authenticated_detail(authorization))
    if response is None:
        logger.exception("api: unhandled error", exc_info=exc)
        response = Response(error_data(SERVER_ERROR), status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    elif response.status_code == status.HTTP_400_BAD_REQUEST:
        response.data = bad_request_body(response.data)
    return response


def bad_request_body(data) -> dict:
    """The 400 shape: a map of names to lists of messages. DRF gives `{"detail": ...}` for a
    body it cannot parse, and a bare list for a ValidationError raised without a field."""
    if isinstance(data, dict) and set(data) == {"detail"}:
        data = [data["detail"]]
    if isinstance(data, str):
        return error_data(data, status=400)
    if isinstance(data, list):
        return {api_settings.NON_FIELD_ERRORS_KEY: data}
    return data


def request_data_refusal(exc) -> tuple[int, dict] | None:
    """(status, body) for Django's refusals of what a client sent: more query or form fields
    than DATA_UPLOAD_MAX_NUMBER_FIELDS, more files than DATA_UPLOAD_MAX_NUMBER_FILES, a broken
    multipart body (400), a body over DATA_UPLOAD_MAX_MEMORY_SIZE (413). None for anything else.

    Django raises these as SuspiciousOperation from wherever the data is first read: DRF let
    them through as 500s, Django's own handler gives its HTML 400 page (handler400 below)."""
    if isinstance(exc, RequestDataTooBig):  # behind the ASGI limit, only without it (WSGI, tests)
        return 413, error_data(body_too_large_detail(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    if isinstance(exc, TooManyFieldsSent):
        detail = too_many_fields_detail(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS)
    elif isinstance(exc, TooManyFilesSent):
        detail = too_many_files_detail(settings.DATA_UPLOAD_MAX_NUMBER_FILES)
    elif isinstance(exc, SuspiciousMultipartForm):
        detail = MALFORMED_MULTIPART
    else:
        return None
    return 400, bad_request_body(detail)


def bad_request(request, exception=None):
    """handler400 (viswals/urls.py), for every path: request data Django refused is a JSON
    error (request_data_refusal); any other 400 is Django's own page. With DEBUG on Django
    shows its debug page instead and never calls this."""
    refusal = request_data_refusal(exception)
    if refusal is not None:
        return JsonResponse(refusal[1], status=refusal[0])
    return defaults.bad_request(request, exception)


@csrf_exempt  # a POST or DELETE to a wrong path is told 404, not refused for want of CSRF
def not_found(request, *args, **kwargs) -> JsonResponse:
    """Any other path under /users (a non-numeric id, say): 404 in JSON."""
    return JsonResponse(error_data(NOT_FOUND), status=404)


def csrf_failure(request, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW. Under /users, a JSON 403 naming the cause, in the words of
    DRF's SessionAuthentication ("CSRF Failed: ..."), rather than a bare "Permission denied."
    (the API views are exempt; this is for any route under /users that is not). Django's page
    elsewhere."""
    if _under_users(request.path):
        return JsonResponse(error_data(csrf_failed_detail(reason)), status=403)
    return django_csrf_failure(request, reason)


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


_DETAILS = {400: BAD_REQUEST, 403: FORBIDDEN, 404: NOT_FOUND, 500: SERVER_ERROR}


def _under_users(path: str) -> bool:
    return path == "/users" or path.startswith("/users/")


def _as_json_error(request, response):
    if (
        response.status_code < 400
        or isinstance(response, Response)
        or not _under_users(request.path)
        or not response.get("Content-Type", "").startswith("text/html")
    ):
        return response
    detail = _DETAILS.get(response.status_code, f"{response.reason_phrase}.")
    if response.status_code == 400:
        return JsonResponse(bad_request_body(detail), status=400)
    return JsonResponse(error_data(detail), status=response.status_code)
