"""Errors of the users API as JSON, whatever went wrong: DRF's own errors keep their bodies
(`{"detail": ...}`, or `{"<field>": [...]}` for validation); anything unexpected becomes a
logged 500 `{"detail": ...}` instead of Django's HTML error page."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)

NOT_FOUND = "Not found."
SERVER_ERROR = "Internal server error."


def api_exception_handler(exc, context) -> Response:
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("api: unhandled error", exc_info=exc)
        response = Response({"detail": SERVER_ERROR}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response


def not_found(request, *args, **kwargs) -> JsonResponse:
    """Any other path under /users (a non-numeric id, say): 404 in JSON."""
    return JsonResponse({"detail": NOT_FOUND}, status=404)


# Errors raised before a view runs (a Host header not in ALLOWED_HOSTS, a failure in a
# middleware) are answered by these handlers (viswals/urls.py): JSON under /users, Django's
# pages elsewhere. With DEBUG on, Django shows its debug page for those instead.


def _under_users(request) -> bool:
    return request.path == "/users" or request.path.startswith("/users/")


def bad_request(request, exception=None):
    if _under_users(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _under_users(request):
        return JsonResponse({"detail": "Permission denied."}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _under_users(request):
        return not_found(request)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _under_users(request):
        return JsonResponse({"detail": SERVER_ERROR}, status=500)
    return defaults.server_error(request)
