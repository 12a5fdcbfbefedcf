"""Static files (admin, browsable API, Swagger UI) served by whitenoise from the ASGI server.

whitenoise's middleware is sync-only, and one sync-only middleware makes Django run the whole
middleware chain, and every view, in a worker thread: async views would lose their point. This
subclass is async-capable: a static file is served from a thread, everything else is awaited.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware as SyncWhiteNoiseMiddleware


class WhiteNoiseMiddleware(SyncWhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, *args, **kwargs) -> None:
        super().__init__(get_response, *args, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        path = request.path_info
        if self.autorefresh:
            # Development: look on disk, but only for static URLs (no thread for the others).
            static_file = (
                await sync_to_async(self.find_file)(path)
                if path.startswith(self.static_prefix)
                else None
            )
        else:
            static_file = self.files.get(path)  # built at start-up: a dict lookup
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)
