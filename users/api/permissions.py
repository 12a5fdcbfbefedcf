"""Who may call the users API: writes need an authenticated client; reads are open unless
settings.API_READS_REQUIRE_AUTH is on."""

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission


def reads_require_auth() -> bool:
    return getattr(settings, "API_READS_REQUIRE_AUTH", False)


class ReadOpenWriteAuthenticated(BasePermission):
    def has_permission(self, request, view) -> bool:
        authenticated = bool(request.user and request.user.is_authenticated)
        if request.method in SAFE_METHODS and not reads_require_auth():
            return True
        return authenticated
