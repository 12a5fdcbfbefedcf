"""Routes of the users API."""

urlpatterns: list = []
