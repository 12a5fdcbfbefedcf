"""Errors of the users API as JSON, whatever went wrong: DRF's own errors keep their bodies
(`{"detail": ...}`, or `{"<field>": [...]}` for validation); anything unexpected becomes a
logged 500 `{"detail": ...}` instead of Django's HTML error page."""

from __future__ import annotations

import logging

from django.http import JsonResponse
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
