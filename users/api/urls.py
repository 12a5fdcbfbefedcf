"""Routes of the users API. Ids are numeric only, so sibling paths such as /users/sse never match
here; any other path under /users is answered with a JSON 404 (viswals/urls.py)."""

from django.urls import path

from users.api.views import UserViewSet

urlpatterns = [
    path("users", UserViewSet.as_view({"get": "list", "post": "create"}), name="user-list"),
    # GET from JSON clients is answered ahead of Django (users.api.asgi): the schema documents
    # that answer through this route.
    path(
        "users/<int:pk>",
        UserViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="user-detail",
    ),
]
