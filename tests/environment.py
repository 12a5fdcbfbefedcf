"""Loaded before Django (pytest `-p tests.environment`, see pyproject.toml): the environment
every test process starts from.

A secret key of this run's own. Settings refuse, with debug off, a key that is short or
published in the repository (viswals/secret_key.py), and the test processes run with debug off:
so no fixed test key is kept anywhere, and whatever DJANGO_SECRET_KEY the shell has is replaced.
Subprocesses (web servers, workers) inherit it.
"""

import os
import secrets


def random_secret_key() -> str:
    """A key the production rules accept, new on every call."""
    return secrets.token_urlsafe(50)


os.environ["DJANGO_SECRET_KEY"] = random_secret_key()
