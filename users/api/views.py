"""HTTP adapters for users: DRF viewset for the API and the browsable API, plus an async fast
path for the hot read.

`GET /users/{id}` from a JSON client (token or anonymous) is served by `user_detail` without
entering DRF (users.api.fast_read: one Redis round trip on the event loop, the cached bytes as
they are). Everything else — browsers asking for HTML, sessions, DELETE — goes to
`UserViewSet`, which decides the same way.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from users import selectors, services
from users.api.exceptions import NOT_FOUND, SERVER_ERROR
from users.api.fast_read import JSON_HEADERS, fast_path_serves, read_user
from users.api.pagination import UserCursorPagination
from users.api.schema import ERROR, VALIDATION_ERROR
from users.api.serializers import UserSerializer
from users.consistency import request_read_alias
from users.filters import UserFilter
from users.payloads import to_json
from viswals.client_address import request_client_address
from viswals.db_router import read_with_fallback

logger = logging.getLogger(__name__)

# Every DRF operation: 401/403 (users.access), 406 (an Accept header it cannot satisfy), 429.
# Answers from around the views (400 for a bad Host, 413, 431, 500) are added by
# users.api.schema.postprocess_schema, as is GET /users/sse.
_REFUSALS = {401: ERROR, 403: ERROR, 406: ERROR, 429: ERROR}


@extend_schema_view(
    list=extend_schema(
        summary="List users",
        description="Keyset-paginated, filtered and ordered; follow `next`/`previous`.",
        responses={200: UserSerializer(many=True), 400: VALIDATION_ERROR, **_REFUSALS},
    ),
    create=extend_schema(
        summary="Create a user",
        description="The id is assigned by the server (an `id` in the body is ignored).",
        responses={201: UserSerializer, 400: VALIDATION_ERROR, 415: ERROR, **_REFUSALS},
    ),
    retrieve=extend_schema(
        summary="Get a user",
        responses={200: UserSerializer, 404: ERROR, **_REFUSALS},
    ),
    destroy=extend_schema(
        summary="Delete a user",
        responses={204: None, 404: ERROR, **_REFUSALS},
    ),
)
class UserViewSet(
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
        return read_with_fallback(
            lambda database: self._list_from(database, request, *args, **kwargs),
            request_read_alias(request),
        )

    def _list_from(self, database: str, request, *args, **kwargs) -> Response:
        self._database = database
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


_drf_detail = UserViewSet.as_view({"get": "retrieve", "delete": "destroy"})
_SERVER_ERROR_BODY = to_json({"detail": SERVER_ERROR}).encode()


@csrf_exempt  # like every DRF view: SessionAuthentication enforces CSRF itself
async def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """GET/DELETE /users/{id}. (users.api.asgi serves the same fast path ahead of Django.)"""
    authorization = request.headers.get("authorization")
    serves = fast_path_serves(
        method=request.method,
        has_query=bool(request.GET),
        accept=request.headers.get("accept", ""),
        authorization=authorization,
        session=settings.SESSION_COOKIE_NAME in request.COOKIES,
    )
    if not serves:
        return await sync_to_async(_drf_detail)(request, pk=pk)
    try:
        status_code, body, headers = await read_user(
            pk, authorization=authorization, address=request_client_address(request)
        )
    except Exception:
        logger.exception("api: unhandled error reading user %s", pk)
        status_code, body, headers = 500, _SERVER_ERROR_BODY, {}
    return HttpResponse(
        body,
        status=status_code,
        content_type="application/json",
        headers={**JSON_HEADERS, **headers},
    )


# Let schema generation and the browsable API see the viewset behind this route.
user_detail.cls = _drf_detail.cls
user_detail.initkwargs = _drf_detail.initkwargs
user_detail.actions = _drf_detail.actions
