"""The users API's permission: users.access.may() for the action a method stands for. DRF then
answers 401 (with WWW-Authenticate) to an anonymous client and 403 to an account without the
permission."""

from rest_framework.permissions import BasePermission

from users.access import may
from users.api.authentication import request_principal

ACTION_OF_METHOD = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add",
                    "DELETE": "delete"}  # fmt: skip


class UsersAccess(BasePermission):
    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        action = ACTION_OF_METHOD.get(request.method)
        if action is None:  # PUT, PATCH, ...: nobody (the view answers 405 to those it lacks)
            return bool(request.user and request.user.is_authenticated)
        return may(request_principal(request), action)
