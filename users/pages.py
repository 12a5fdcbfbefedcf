"""The landing page at `/`, `/users/` and `/users/{id}/` sending clients to the paths without
the slash, and the browsable API's login link.

The page names no user: anonymous visitors see how many users there are and how the latest
ingest run went (asked of the function settings.LANDING_PAGE_LATEST_RUN names: users imports
nothing of ingest); staff also see that run's file and the admin's import page.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from users.error_bodies import error_data
from users.payloads import to_json
from users.selectors import user_count


def home(request: HttpRequest) -> HttpResponse:
    """GET /: what the service is, where to go, and how many users it holds."""
    users, exact = user_count()
    return render(
        request,
        "users/home.html",
        {
            "users": f"{users:,}",
            "users_exact": exact,
            "run": import_string(settings.LANDING_PAGE_LATEST_RUN)(),
            "staff": request.user.is_active and request.user.is_staff,
        },
    )


# Exempt from CsrfViewMiddleware, like the API views it leads to: a redirect changes nothing,
# and a token client's POST or DELETE must reach the API (which checks CSRF for sessions)
# rather than be refused here with a 403 that names no cause.
@csrf_exempt
def users_trailing_slash(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """/users/ -> /users and /users/{id}/ -> /users/{id}, query string kept; 308 keeps the
    method and body (a POST stays a POST). The JSON body says where to go, for clients that do
    not follow redirects."""
    target = reverse("user-list") if pk is None else reverse("user-detail", args=[pk])
    location = target
    if request.META.get("QUERY_STRING"):
        location = f"{target}?{request.META['QUERY_STRING']}"
    response = HttpResponseRedirect(
        location,
        content=to_json(error_data(f"Moved permanently to {target} (no trailing slash).")),
        content_type="application/json",
    )
    response.status_code = 308
    return response


def api_login(request: HttpRequest) -> HttpResponse:
    """GET /api-auth/login/?next=...: the browsable API's "Log in" link, sent on to the admin's
    login page (the site's one login page, /users/live's too), which checks `next` and returns
    there. DRF finds this view as `rest_framework:login`."""
    return redirect_to_login(
        request.GET.get("next") or reverse("user-list"), login_url=reverse("admin:login")
    )
