"""HTTP adapters for users: DRF viewset for the API and the browsable API, plus an async fast
path for the hot read.

`GET /users/{id}` from an anonymous JSON client is served by `user_detail` without entering DRF:
one pipelined Redis round trip (cached JSON + rate-limit counter) on the event loop, returning the
cached bytes as they are. Everything else — browsers asking for HTML, authenticated clients,
reads when they require auth, DELETE — goes to `UserViewSet`, which behaves the same way.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from users import cache, selectors, services
from users.api.exceptions import NOT_FOUND, SERVER_ERROR
from users.api.pagination import UserCursorPagination
from users.api.permissions import reads_require_auth
from users.api.serializers import ErrorSerializer, UserSerializer
from users.api.throttling import AnonRedisThrottle, anon_window
from users.filters import UserFilter
from users.payloads import to_json

logger = logging.getLogger(__name__)

_VALIDATION_ERROR = OpenApiResponse(
    response={
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
        "example": {"email_address": ["not a valid email address: 'x'"]},
    },
    description="Each offending field or query parameter with its messages; "
    'malformed JSON gives `{"detail": "..."}`.',
)
_ERROR = OpenApiResponse(ErrorSerializer, description='`{"detail": "..."}`')


@extend_schema_view(
    list=extend_schema(
        summary="List users",
        description="Keyset-paginated, filtered and ordered; follow `next`/`previous`.",
        responses={200: UserSerializer(many=True), 400: _VALIDATION_ERROR, 429: _ERROR},
    ),
    create=extend_schema(
        summary="Create a user",
        description="The id is assigned by the server (an `id` in the body is ignored).",
        responses={201: UserSerializer, 400: _VALIDATION_ERROR, 401: _ERROR, 429: _ERROR},
    ),
    retrieve=extend_schema(
        summary="Get a user",
        responses={200: UserSerializer, 404: _ERROR, 429: _ERROR},
    ),
    destroy=extend_schema(
        summary="Delete a user",
        responses={204: None, 401: _ERROR, 404: _ERROR},
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

    def get_queryset(self):
        return selectors.user_list()

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
# Same headers as the DRF path would vary on; nosniff as SecurityMiddleware would add.
JSON_HEADERS = {"Vary": "Accept, Authorization, Cookie", "X-Content-Type-Options": "nosniff"}


def fast_path_serves(
    *, method: str, has_query: bool, accept: str, authorization: bool, session: bool
) -> bool:
    """Anonymous JSON GETs without options; the browsable API and the rest go to DRF."""
    return (
        method == "GET"
        and not has_query
        and not authorization
        and not session
        and "text/html" not in accept
        and not reads_require_auth()
    )


def _load_user_json(user_id: int, release_connection: bool) -> bytes | None:
    try:
        payload = selectors.user_load_payload(user_id=user_id)
    finally:
        if release_connection:
            # Outside Django's request cycle nobody else hands the pooled connection back.
            close_old_connections()
    return None if payload is None else to_json(payload).encode()


async def read_user_json(
    user_id: int, *, ident: str, release_connection: bool = False
) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and extra headers of an anonymous GET /users/{id}: cached JSON bytes as
    they are, PostgreSQL (filling the cache) on a miss or when Redis is down.
    `release_connection`: called outside Django's request cycle (users.api.asgi)."""
    window = anon_window(ident)
    cached, count = await cache.acached_user_json(user_id, throttle=window[:2] if window else None)
    if window and count is not None and count > window[2]:
        wait = max(int(window[3]) + 1, 1)
        body = to_json({"detail": f"Request was throttled. Expected available in {wait} seconds."})
        return 429, body.encode(), {"Retry-After": str(wait)}
    if cached is None:
        cached = await sync_to_async(_load_user_json)(user_id, release_connection)
        if cached is None:
            return 404, _NOT_FOUND_BODY, {}
    return 200, cached, {}


_NOT_FOUND_BODY = to_json({"detail": NOT_FOUND}).encode()
_SERVER_ERROR_BODY = to_json({"detail": SERVER_ERROR}).encode()


@csrf_exempt  # like every DRF view: SessionAuthentication enforces CSRF itself
async def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """GET/DELETE /users/{id}. (users.api.asgi serves the same fast path ahead of Django.)"""
    serves = fast_path_serves(
        method=request.method,
        has_query=bool(request.GET),
        accept=request.headers.get("accept", ""),
        authorization="authorization" in request.headers,
        session=settings.SESSION_COOKIE_NAME in request.COOKIES,
    )
    if not serves:
        return await sync_to_async(_drf_detail)(request, pk=pk)
    try:
        status_code, body, headers = await read_user_json(
            pk, ident=AnonRedisThrottle().get_ident(request)
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
