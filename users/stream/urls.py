"""Routes of the users live stream: the SSE endpoint and the page that shows it."""

from django.urls import path

from users.stream.views import users_event_stream, users_live

urlpatterns = [
    path("users/sse", users_event_stream, name="users-sse"),
    path("users/live", users_live, name="users-live"),
]
