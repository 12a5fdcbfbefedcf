"""URL wiring for the whole project."""

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from users import pages
from users.api.exceptions import bad_request, not_found
from viswals import health, metrics

# The browsable API's "Log in" and "Log out" links (DRF looks them up as rest_framework:login and
# rest_framework:logout): the login is the admin's page, as for /users/live.
api_auth_urls = (
    [
        path("login/", pages.api_login, name="login"),
        path("logout/", LogoutView.as_view(), name="logout"),
    ],
    "rest_framework",
)

urlpatterns = [
    path("", pages.home, name="home"),
    path("users/", pages.users_trailing_slash),
    path("users/<int:pk>/", pages.users_trailing_slash),
    # Operations: liveness, readiness and Prometheus metrics (see docs/operations.md).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api-auth/", include(api_auth_urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("users.stream.urls")),  # before the API: users/sse, users/live
    path("", include("users.api.urls")),
]

# Keep last: any other path under /users (a non-numeric id, say) is a JSON 404, also with
# DEBUG on, where Django would answer with its HTML debug page.
urlpatterns += [re_path(r"^users(/.*)?$", not_found)]

# Request data Django refuses (too many fields or files, a body too large) as a JSON error on
# every path, not its HTML 400 page.
handler400 = bad_request
