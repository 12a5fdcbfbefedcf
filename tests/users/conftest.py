"""Fixtures for the users API tests: API clients, a token user and user rows."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.support.factories import UserFactory


@pytest.fixture(autouse=True)
def _api_test_settings(settings):
    """Tests share the client address 127.0.0.1: no rate limit unless a test sets one; and
    plain-HTTP test requests are not redirected to HTTPS (production default, debug off)."""
    settings.API_ANON_THROTTLE_RATE = ""
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture(scope="session")
def openapi() -> dict:
    """The OpenAPI schema, as /api/schema/ serves it."""
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def user_factory(db):
    return UserFactory


def _token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def reader_client(api_token) -> APIClient:
    """An API client in the `reader` role (users.view_user)."""
    return _token_client(api_token("reader"))


@pytest.fixture
def writer_client(api_token) -> APIClient:
    """An API client in the `writer` role (view, add and delete users)."""
    return _token_client(api_token("writer"))


@pytest.fixture
def nobody_client(api_token) -> APIClient:
    """An authenticated API client whose account has no permission at all."""
    return _token_client(api_token(None))


@pytest.fixture
def clean_user_cache(redis_client):
    """Forget the cache entries of the ids a test hands in, before and after it."""
    used: list[int] = []

    def track(*user_ids: int) -> None:
        from users.cache import forget_users

        used.extend(user_ids)
        forget_users(user_ids)

    yield track
    from users.cache import forget_users

    forget_users(used)


@pytest.fixture
def admin_client(client, django_user_model, plain_static_storage):
    """The admin as a logged-in superuser."""
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    return client
