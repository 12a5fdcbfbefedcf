"""The landing page at `/`, and `/users/` sending clients to `/users`.

The page names no user: anonymous visitors see how many users there are and how the latest
ingest run went; staff also see that run's file and the admin's import page.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from ingest.selectors import ingest_run_latest
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
            "run": ingest_run_latest(),
            "staff": request.user.is_active and request.user.is_staff,
        },
    )


def users_trailing_slash(request: HttpRequest) -> HttpResponse:
    """/users/ -> /users, query string kept; 308 keeps the method (a POST stays a POST)."""
    target = reverse("user-list")
    if request.META.get("QUERY_STRING"):
        target = f"{target}?{request.META['QUERY_STRING']}"
    response = HttpResponseRedirect(target)
    response.status_code = 308
    return response
