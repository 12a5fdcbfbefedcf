"""The users API's permission: users.refusals.refusal() for the action a method stands for, the
decision every path takes. DRF then answers 401 (with WWW-Authenticate) to an anonymous client
and 403, with the same words, to an account without the permission."""

from rest_framework.permissions import BasePermission

from users.api.authentication import request_principal
from users.refusals import PERMISSION_DENIED, refusal

ACTION_OF_METHOD = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add",
                    "DELETE": "delete"}  # fmt: skip


class UsersAccess(BasePermission):
    message = PERMISSION_DENIED

    def has_permission(self, request, view) -> bool:
        action = ACTION_OF_METHOD.get(request.method)
        if action is None:  # PUT, PATCH, ...: nobody (the view answers 405 to those it lacks)
            return bool(request.user and request.user.is_authenticated)
        return refusal(request_principal(request), action) is None
