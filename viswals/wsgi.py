"""WSGI entry point (management and tooling; production serves ASGI, see asgi.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viswals.settings")
application = get_wsgi_application()
