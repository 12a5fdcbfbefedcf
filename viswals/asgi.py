"""ASGI entry point served by uvicorn (Procfile `web:`): the API, admin and the SSE stream."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")
# Sync views run in per-request threads under ASGI: use a connection pool, not
# persistent per-thread connections (see settings.DATABASES).
os.environ.setdefault("DATABASE_POOL", "true")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
