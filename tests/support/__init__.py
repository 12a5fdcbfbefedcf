"""What tests share, written once. Conftest files hold only fixtures and hooks; tests import
helpers from here, never from a conftest or from another test module.

- `environment`: this run's names (RUN_ID, TEST_ENV), the secret key, subprocesses' environment.
- `waits`: `wait_until(condition, timeout, message)`, the one way a test waits for something.
- `servers`: `WebServer` (the Procfile's uvicorn) and `Worker` (Celery) as real processes.
- `sse`: the SSE client tests read streams with.
- `factories`: factory_boy factories (`UserFactory`, `IngestRunFactory`).
- `data`: the CSV header, an email that grows when normalised, a user's cache entry.
- `chromium`: headless Chromium over the DevTools protocol.
- `restarts`: what restarts the shared PostgreSQL, Redis and RabbitMQ (`make test-restarts`).
"""
