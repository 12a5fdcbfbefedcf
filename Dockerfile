# One image for the web process, the Celery worker and the one-shot publisher.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 1000 app

# The runtime only (requirements.txt); test, docs and local tools are in requirements-dev.txt.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files (admin, browsable API, Swagger UI) are collected into the image and served by
# whitenoise from the ASGI server. A throwaway key, made for this step and not kept in the image:
# collectstatic needs settings, not secrets (and settings refuse a short or published key).
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    python manage.py collectstatic --noinput --verbosity 0

# Compose's `setup` keeps the secrets it made on the first start in a named volume mounted here
# (scripts/first-start.sh); a new volume takes this directory's owner, so `app` can write it.
ENV VISWALS_STATE_DIR=/var/lib/viswals
RUN mkdir -p "$VISWALS_STATE_DIR" && chown app:app "$VISWALS_STATE_DIR" && chmod 700 "$VISWALS_STATE_DIR"

USER app
EXPOSE 8080
# Inside the container the server listens on every interface (the port is published by Compose
# or the orchestrator); `make run` on a developer's machine binds 127.0.0.1.
ENV HOST=0.0.0.0
# Web worker processes share their Prometheus metrics through files here (emptied on start by
# scripts/web.sh).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
# Exports the secrets of that volume, when there is one, unless the environment sets them; then
# execs the command.
ENTRYPOINT ["sh", "scripts/entrypoint.sh"]
# The Procfile's web command; it execs uvicorn, so SIGTERM reaches uvicorn and it shuts down
# gracefully.
CMD ["sh", "scripts/web.sh"]
