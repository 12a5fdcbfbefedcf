"""`Authorization: Token <token>` for the DRF views (users.access holds the rule and tokens)."""

from __future__ import annotations

from functools import partial

from django.contrib.auth import get_user_model
from django.utils.functional import SimpleLazyObject
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from users import selectors
from users.access import InvalidCredentials, Principal


class ApiTokenAuthentication(BaseAuthentication):
    """Sets request.user to the token's account and request.auth to its Principal."""

    keyword = "Token"

    def authenticate(self, request) -> tuple | None:
        from users.api.throttling import charge_token_lookup  # it imports this module

        try:
            principal = selectors.principal_for_authorization(
                request.META.get("HTTP_AUTHORIZATION"),
                before_lookup=partial(charge_token_lookup, request),
            )
        except InvalidCredentials as error:
            raise AuthenticationFailed(str(error)) from None
        if principal is None:  # no token header: another authenticator may know the client
            return None
        # The principal says what the client may do; the account row is read only if something
        # asks for it (the browsable API's page header), keeping a list request one query.
        account = SimpleLazyObject(partial(get_user_model().objects.get, pk=principal.account_id))
        return account, principal

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


def request_principal(request) -> Principal | None:
    """The Principal of a DRF request: its token's, or its session account's."""
    from users.access import principal_for_account

    if isinstance(request.auth, Principal):
        return request.auth
    cached = getattr(request, "_users_principal", False)
    if cached is False:
        cached = principal_for_account(request.user)
        request._users_principal = cached
    return cached


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ApiTokenAuthentication."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>`; tokens come from `manage.py create_api_client`.",
        }
