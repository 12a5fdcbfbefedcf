"""The baseline of bench_http_read.py: a minimal ASGI app doing one Redis GET per request.

`GET /users/<id>` returns the `json` field of the user's cache hash (users.cache layout) with no
framework in between: the ceiling any Django view serving the same read is compared against.
Run: uvicorn bench.bare_asgi_redis:app --workers 2 (REDIS_URL, and BENCH_USER_KEY_PREFIX: the
keys' prefix with the database's name, users.cache.user_key(""), from the env).
"""

import os

import redis.asyncio as aioredis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = os.environ["BENCH_USER_KEY_PREFIX"]  # "<USERS_CACHE_PREFIX>:<database>:"
_client = None

_JSON = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if _client is None:
        _client = aioredis.Redis.from_url(REDIS_URL, max_connections=64)
    user_id = scope["path"].rsplit("/", 1)[-1]
    entry = await _client.get(f"{KEY_PREFIX}{user_id}") if user_id.isdigit() else None
    body = entry.partition(b"|")[2] if entry is not None else None  # "<version>|<json>"
    status = 200 if body is not None else 404
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body or b'{"detail":"Not found."}'})
