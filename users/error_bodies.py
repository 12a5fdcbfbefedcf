"""The JSON error body's shape, one for every path, and the words of the refusals made ahead of
Django (the request limits and the uvicorn protocol of viswals/), which the API's own handlers
use too.

Pure (nothing of the project, no settings): the wiring imports it, the uvicorn protocol before
Django is set up. What a refused client is told by the apps, and why, is users.refusals, which
builds its bodies here.
"""

from __future__ import annotations

# DRF's key for what concerns a request as a whole (api_settings.NON_FIELD_ERRORS_KEY).
NON_FIELD_ERRORS = "non_field_errors"


def error_data(detail: str, *, status: int | None = None, **extra) -> dict:
    """The error body before encoding: `{"detail": ...}` (and any `extra` members); for a 400,
    a map of names to lists of messages, the request-wide one under `non_field_errors`."""
    if status == 400:
        return {NON_FIELD_ERRORS: [detail], **extra}
    return {"detail": detail, **extra}


# --- The words of refusals made ahead of Django ------------------------------------------------


def body_too_large_detail(limit: int) -> str:
    return f"Request body too large: at most {limit} bytes."


def head_too_large_detail(limit: int) -> str:
    return f"Request headers too large: at most {limit} bytes in all."


def head_timeout_detail(seconds: float) -> str:
    return f"No complete request head within {seconds:g} s."


def body_stalled_detail(seconds: float) -> str:
    return f"The request body stalled: nothing for {seconds:g} s."


def imports_busy_detail(retry_after: int) -> str:
    return (
        "Too many imports are being uploaded to this server at once; "
        f"try again in {retry_after} seconds."
    )


CONTENT_LENGTH_NOT_A_NUMBER = "Content-Length is not a number."
