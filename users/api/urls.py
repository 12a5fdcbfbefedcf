"""Routes of the users API. Ids are numeric only, so sibling paths such as /users/sse never match
here; any other path under /users is answered with a JSON 404 (viswals/urls.py)."""

from django.urls import path

from users.api.views import UserViewSet, user_detail

urlpatterns = [
    path("users", UserViewSet.as_view({"get": "list", "post": "create"}), name="user-list"),
    path("users/<int:pk>", user_detail, name="user-detail"),
]
