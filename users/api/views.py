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
from django.http import HttpRequest, HttpResponse, JsonResponse
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
from users.api.throttling import AnonRedisThrottle
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
_JSON_HEADERS = {"Vary": "Accept, Authorization, Cookie"}


def _fast_path_serves(request: HttpRequest) -> bool:
    """Anonymous JSON GETs without options; the browsable API and the rest go to DRF."""
    if request.method != "GET" or request.GET or reads_require_auth():
        return False
    if "authorization" in request.headers or settings.SESSION_COOKIE_NAME in request.COOKIES:
        return False
    return "text/html" not in request.headers.get("accept", "")


async def _fast_get(request: HttpRequest, user_id: int) -> HttpResponse:
    throttle = AnonRedisThrottle()
    window = throttle.window(request)
    cached, count = await cache.acached_user_json(user_id, throttle=window[:2] if window else None)
    if window and count is not None and count > window[2]:
        wait = max(int(window[3]) + 1, 1)
        return JsonResponse(
            {"detail": f"Request was throttled. Expected available in {wait} seconds."},
            status=429,
            headers={"Retry-After": str(wait)},
        )
    if cached is None:
        payload = await sync_to_async(selectors.user_load_payload)(user_id=user_id)
        if payload is None:
            return JsonResponse({"detail": NOT_FOUND}, status=404, headers=_JSON_HEADERS)
        cached = to_json(payload).encode()
    return HttpResponse(cached, content_type="application/json", headers=_JSON_HEADERS)


@csrf_exempt  # like every DRF view: SessionAuthentication enforces CSRF itself
async def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """GET/DELETE /users/{id}."""
    if not _fast_path_serves(request):
        return await sync_to_async(_drf_detail)(request, pk=pk)
    try:
        return await _fast_get(request, pk)
    except Exception:
        logger.exception("api: unhandled error reading user %s", pk)
        return JsonResponse({"detail": SERVER_ERROR}, status=500)


# Let schema generation and the browsable API see the viewset behind this route.
user_detail.cls = _drf_detail.cls
user_detail.initkwargs = _drf_detail.initkwargs
user_detail.actions = _drf_detail.actions
