"""HTTP adapters for users: the DRF viewset for the API and the browsable API.

`GET /users/{id}` from a JSON client (token or anonymous) has one door, ahead of Django:
users.api.asgi (users.api.fast_read: one Redis round trip on the event loop, the cached bytes as
they are). What reaches `UserViewSet.retrieve` is everything that door leaves to Django —
browsers asking for HTML, sessions, query strings — and requests that never pass the ASGI
wrapper (Django's test client, WSGI); it decides the same way (users.refusals).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from users import selectors, services
from users.api.pagination import UserCursorPagination
from users.api.query_params import KnownQueryParamsOnly
from users.api.schema import ERROR, QUERY_ERROR, QUERY_TIMEOUT_ERROR, VALIDATION_ERROR
from users.api.serializers import UserSerializer
from users.consistency import request_read_alias
from users.filters import UserFilter
from users.refusals import NOT_FOUND, QUERY_TIMEOUT, error_data
from viswals.db_router import read_with_fallback

logger = logging.getLogger(__name__)

# Every DRF operation: 401/403 (users.access), 406 (an Accept header it cannot satisfy), 429.
# Answers from around the views (400 for a bad Host, 413, 431, 500) are added by
# users.api.schema.postprocess_schema, as is GET /users/sse.
_REFUSALS = {401: ERROR, 403: ERROR, 406: ERROR, 429: ERROR}


@extend_schema_view(
    list=extend_schema(
        summary="List users",
        description="Keyset-paginated, filtered and ordered; follow `next`/`previous`. "
        "A query parameter not listed here is refused (400, naming it), not ignored.",
        responses={
            200: UserSerializer(many=True),
            400: VALIDATION_ERROR,
            503: QUERY_TIMEOUT_ERROR,
            **_REFUSALS,
        },
    ),
    create=extend_schema(
        summary="Create a user",
        description="The id is assigned by the server (an `id` in the body is ignored). "
        "Takes no query parameters: the list's are accepted and ignored (the browsable API "
        "posts to the address of the page it shows), any other is refused (400).",
        responses={201: UserSerializer, 400: VALIDATION_ERROR, 415: ERROR, **_REFUSALS},
    ),
    retrieve=extend_schema(
        summary="Get a user",
        description="Takes no query parameters: any is refused (400, naming it).",
        responses={200: UserSerializer, 400: QUERY_ERROR, 404: ERROR, **_REFUSALS},
    ),
    destroy=extend_schema(
        summary="Delete a user",
        description="Takes no query parameters: any is refused (400, naming it).",
        responses={204: None, 400: QUERY_ERROR, 404: ERROR, **_REFUSALS},
    ),
)
class UserViewSet(
    KnownQueryParamsOnly,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = UserSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = UserFilter
    pagination_class = UserCursorPagination
    lookup_value_regex = r"[0-9]+"

    # The database list() reads: a replica when one may serve this client (users.consistency).
    _database = DEFAULT_DB_ALIAS

    def get_queryset(self):
        return selectors.user_list(using=self._database)

    def list(self, request, *args, **kwargs) -> Response:
        try:
            return read_with_fallback(
                lambda database: self._list_from(database, request, *args, **kwargs),
                request_read_alias(request),
            )
        except selectors.QueryTimeout:
            # The query's shape, never its values (names, emails): which parameters were set
            # (all of them accepted ones: KnownQueryParamsOnly refused any other).
            logger.warning(
                "api: GET /users cancelled after %s ms; parameters: %s",
                settings.API_QUERY_TIMEOUT_MS,
                ",".join(sorted(request.query_params)) or "none",
            )
            response = Response(error_data(QUERY_TIMEOUT), status=503)
            # The line above is this answer's log line: Django's own ("Service Unavailable")
            # would add a second one, without the shape.
            response._has_been_logged = True
            return response

    def _list_from(self, database: str, request, *args, **kwargs) -> Response:
        # Every query of the list (the page and its serialization) under the read bound.
        self._database = database
        with selectors.bounded_read(using=database):
            return super().list(request, *args, **kwargs)

    def _user_id(self) -> int:
        user_id = int(self.kwargs["pk"])
        if not 0 < user_id <= selectors.MAX_USER_ID:
            raise NotFound(NOT_FOUND)
        return user_id

    def retrieve(self, request, *args, **kwargs) -> Response:
        payload = selectors.user_get_payload(user_id=self._user_id())
        if payload is None:
            raise NotFound(NOT_FOUND)
        return Response(payload)

    def perform_create(self, serializer) -> None:
        serializer.instance = services.user_create(**serializer.validated_data)

    def destroy(self, request, *args, **kwargs) -> Response:
        if not services.user_delete(user_id=self._user_id()):
            raise NotFound(NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)
