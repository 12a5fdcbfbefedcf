"""What a production secret key must be: checked when settings load, so in every process.

Django signs sessions, password reset links and CSRF tokens with SECRET_KEY; a short key or one
anybody can read in this repository lets them be forged. With debug off settings.py refuses to
start on a key that is missing, shorter than 50 characters, made of fewer than 5 different
characters or starting with "django-insecure-" (the rules of Django's own `check --deploy`,
security.W009, made fatal), or one published here. The process stops with one line saying
why and how to make a key, never a traceback.
"""

from __future__ import annotations

import hashlib

MIN_LENGTH = 50
# Exit status of a process refused at start-up (uvicorn's own for a worker that cannot start).
STARTUP_FAILURE = 3
MIN_UNIQUE_CHARACTERS = 5
HOW_TO_MAKE_ONE = (
    "make one with: python -c 'import secrets; print(secrets.token_urlsafe(50))' "
    "(or set DJANGO_DEBUG=true for local development)"
)

# SHA-256 of every key this repository carries or has carried in a usable form (.env.example,
# docker-compose.yml, the benchmark and test helpers, the development key): whoever reads the
# repository knows them. tests/ops/test_settings.py fails when a file of the repository sets
# a DJANGO_SECRET_KEY that these rules do not refuse, so one added later cannot slip through.
PUBLISHED_KEY_DIGESTS = frozenset(
    {
        # .env.example, until placeholders replaced it
        "e2699d22cc592fb7bb3b040feb1ef8482e1b8fa015e72c101f7e5ade944ed231",
        # docker-compose.yml's default, until it required the variable
        "a47e9beb1b61b6f20a9c5a3e23f04da0df8038b1fee717882a5bebcb49aebf1d",
        # bench/scratch.py, until it generated a key per run
        "7358334f9da208bb5ae92b289990892cad89fe107357bb0523bd0dad65da48e1",
        # tests/ops/test_logging.py, likewise
        "a5d0c86bcab9dfa348ff94c2933ccfe362e95ec83c1b934aab904dff352533d1",
        # settings.py's development key (debug on only)
        "e7b9c7444db90d5440a139c4a50cd402de99283ec3f52c3ced6b499cf4fec86b",
    }
)


def secret_key_problem(key: str | None) -> str | None:
    """Why `key` must not be used with debug off, as one line; None when it may."""
    if not key:
        reason = "DJANGO_SECRET_KEY is not set"
    elif len(key) < MIN_LENGTH:
        reason = f"DJANGO_SECRET_KEY is shorter than {MIN_LENGTH} characters"
    elif len(set(key)) < MIN_UNIQUE_CHARACTERS:
        reason = f"DJANGO_SECRET_KEY has fewer than {MIN_UNIQUE_CHARACTERS} different characters"
    elif key.startswith("django-insecure-"):
        reason = "DJANGO_SECRET_KEY starts with 'django-insecure-'"
    elif hashlib.sha256(key.encode()).hexdigest() in PUBLISHED_KEY_DIGESTS:
        reason = "DJANGO_SECRET_KEY is a key published in the viswals repository"
    else:
        return None
    return f"{reason} (required with DJANGO_DEBUG off); {HOW_TO_MAKE_ONE}"
