"""Static files (admin, browsable API, Swagger UI) served by whitenoise from the ASGI server.

whitenoise's middleware is sync-only, and one sync-only middleware makes Django run the whole
middleware chain, and every view, in a worker thread: async views would lose their point. This
middleware wraps whitenoise's own (which finds and serves the files) and is async-capable: a
static file is served from a thread, everything else is awaited.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware


@sync_and_async_middleware
def static_files_middleware(get_response):
    """Serve collected static files; pass every other request on."""
    whitenoise = WhiteNoiseMiddleware(get_response)
    if not iscoroutinefunction(get_response):
        return whitenoise

    async def middleware(request):
        path = request.path_info
        if whitenoise.autorefresh:
            # Development: look on disk, but only for static URLs (no thread for the others).
            static_file = (
                await sync_to_async(whitenoise.find_file)(path)
                if path.startswith(whitenoise.static_prefix)
                else None
            )
        else:
            static_file = whitenoise.files.get(path)  # built at start-up: a dict lookup
        if static_file is not None:
            return await sync_to_async(whitenoise.serve)(static_file, request)
        return await get_response(request)

    return middleware
