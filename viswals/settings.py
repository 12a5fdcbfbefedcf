"""Settings for viswals, read from the environment in this one place (twelve-factor).

Defaults point at the services on localhost so a fresh checkout runs; `.env.example` lists every
variable. Production sets DJANGO_DEBUG=false and a real DJANGO_SECRET_KEY.
"""

import sys
from datetime import timedelta
from pathlib import Path

import environ
import redis.connection
from django.core.exceptions import ImproperlyConfigured

from viswals.email_keys import (
    DEVELOPMENT_EMAIL_BLIND_INDEX_KEY,
    DEVELOPMENT_EMAIL_ENCRYPTION_KEYS,
    EmailKeyError,
    email_keys_load,
)
from viswals.secret_key import STARTUP_FAILURE, secret_key_problem

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (never committed) may hold developer overrides.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
_DEV_SECRET_KEY = "django-insecure-dev-only-key-do-not-use-in-production"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and (_problem := secret_key_problem(SECRET_KEY)):
    # Every process loads settings first (manage.py and any command, uvicorn's workers, celery):
    # each stops with this one line on stderr instead of a traceback. Status 3 is uvicorn's
    # start-up failure, which makes its supervisor stop rather than restart workers forever.
    # The rules: viswals/secret_key.py.
    sys.stderr.write(f"viswals: {_problem}\n")
    raise SystemExit(STARTUP_FAILURE)
# Email addresses are encrypted (AES-256-GCM) with the first key of this ring, "id:key,id2:key2",
# and decrypted with whichever key of the ring their token names; the blind-index key (HMAC)
# is separate. Checked like the secret key: without debug a missing, malformed, short or
# published key stops every process with one line (viswals/email_keys.py, docs/security.md).
# With debug on, the local keys `make run` made (scripts/run-local.sh) come next, so every
# process of a checkout (make web, worker, publish) agrees with it; then the development keys.
# Parsed here: both as (id, key bytes) pairs, the current key first.
if DEBUG:
    environ.Env.read_env(BASE_DIR / ".local" / "email_keys.env", overwrite=False)
try:
    EMAIL_ENCRYPTION_KEYS, EMAIL_BLIND_INDEX_KEYS = email_keys_load(
        keyring_text=env.str(
            "EMAIL_ENCRYPTION_KEYS", default=DEVELOPMENT_EMAIL_ENCRYPTION_KEYS if DEBUG else ""
        ),
        blind_index_text=env.str(
            "EMAIL_BLIND_INDEX_KEY", default=DEVELOPMENT_EMAIL_BLIND_INDEX_KEY if DEBUG else ""
        ),
        debug=DEBUG,
    )
except EmailKeyError as _error:
    sys.stderr.write(f"viswals: {_error}\n")
    raise SystemExit(STARTUP_FAILURE) from None
# The `email` substring filter (and the admin's search of addresses) through a keyed n-gram
# index, which reveals more to someone holding the database than the exact-match index alone
# (docs/security.md): a deployment may keep exact matches only. Turning it on again needs
# `manage.py rotate_email_keys --rebuild-index` to fill the n-grams of rows written meanwhile.
EMAIL_SUBSTRING_SEARCH = env.bool("EMAIL_SUBSTRING_SEARCH", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# Under /users a refused CSRF check is JSON naming its cause (users/api/exceptions.py).
CSRF_FAILURE_VIEW = "users.api.exceptions.csrf_failure"
PORT = env.int("PORT", default=8080)

INSTALLED_APPS = [
    # django.contrib.admin with the project's admin site (viswals/admin_site.py).
    "viswals.admin_site.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    # Index expressions with operator classes (the trigram indexes of users 0003).
    "django.contrib.postgres",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "users",
    "ingest",
]

MIDDLEWARE = [
    # Outermost: time and count every response, then tag the request's logs with its id.
    # Both are async-capable, so async views are not pushed into a thread.
    "viswals.metrics.metrics_middleware",
    "viswals.logging.request_id_middleware",
    # Errors raised before a view (bad Host, a failing middleware) as JSON under /users.
    "users.api.exceptions.json_errors_middleware",
    "django.middleware.security.SecurityMiddleware",
    # whitenoise, made async-capable (see viswals/static.py).
    "viswals.static.static_files_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # With read replicas: notes where an account's write left the primary (users.consistency).
    "users.consistency.read_your_writes_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a refused login into its lockout response (async-capable).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "viswals.urls"
WSGI_APPLICATION = "viswals.wsgi.application"
ASGI_APPLICATION = "viswals.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/viswals"),
}
DATABASES["default"]["ENGINE"] = "django.db.backends.postgresql"
# Web processes (ASGI) run each request's sync code in its own thread, so persistent
# per-thread connections leak; they use psycopg's pool instead (asgi.py turns it on).
# Celery prefork workers must not share a pool across forks: they keep one persistent
# connection per process. Budget: docs/deployment.md, "Connection budget".
if env.bool("DATABASE_POOL", default=False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=2),
        "max_size": env.int("DATABASE_POOL_MAX", default=8),
        "timeout": 10,
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# Read replicas (streaming standbys of the primary), comma-separated URLs; none by default.
# Each becomes the alias replica_<n>, connected like the primary. Only the reads that may be a
# moment stale use them (viswals/db_router.py); a replica that is down or lags goes unused.
for _index, _url in enumerate(env.list("DATABASE_REPLICA_URLS", default=[])):
    _replica = env.db_url_config(_url)
    _replica["ENGINE"] = DATABASES["default"]["ENGINE"]
    for _key in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS"):
        if _key in DATABASES["default"]:
            _replica[_key] = DATABASES["default"][_key]
    _replica["OPTIONS"] = {**DATABASES["default"].get("OPTIONS", {}), **_replica.get("OPTIONS", {})}
    if "pool" in _replica["OPTIONS"]:
        # A replica that died between two health checks costs a read this long at most before
        # it falls back to the primary (db_router.read_with_fallback).
        _replica["OPTIONS"]["pool"] = {**_replica["OPTIONS"]["pool"], "timeout": 2}
    # Tests point a replica alias at the primary's test database rather than creating one.
    _replica["TEST"] = {"MIRROR": "default"}
    DATABASES[f"replica_{_index}"] = _replica
DATABASE_ROUTERS = ["viswals.db_router.PrimaryRouter"]
# A replica further behind the primary than this (seconds) is skipped until it catches up.
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=5.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Logins and passwords -------------------------------------------------------------------
# django-axes first: it refuses a locked-out login before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lockout (django-axes, https://django-axes.readthedocs.io/): after AXES_FAILURE_LIMIT failed
# logins for one account from one address, that pair is refused, right password or not, for
# AXES_COOLOFF_MINUTES (0: until unlocked by hand, see docs/security.md, "Admin login").
# Attempts are kept in PostgreSQL, so every web process sees the same count.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
_axes_cooloff_minutes = env.int("AXES_COOLOFF_MINUTES", default=15)
AXES_COOLOFF_TIME = timedelta(minutes=_axes_cooloff_minutes) if _axes_cooloff_minutes else None
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# The address from the socket; X-Forwarded-For only from TRUSTED_PROXIES (users/client_address.py).
AXES_CLIENT_IP_CALLABLE = "users.client_address.request_client_address"
# A successful login forgets that pair's earlier failures.
AXES_RESET_ON_SUCCESS = True
# Django's four standard validators: admin forms, createsuperuser and changepassword refuse a
# password that is like the username, shorter than 8 characters, common or all digits.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Redis ----------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Redis with Sentinel (docs/deployment.md): the Sentinels' "host:port" list and the name they
# monitor the primary under. Set, every Redis client asks the Sentinels for the primary's
# address (and asks again after a failover); REDIS_URL then gives only the database number and
# the data nodes' credentials, its host is ignored. Empty (the default): REDIS_URL's one server.
REDIS_SENTINELS = env.list("REDIS_SENTINELS", default=[])
REDIS_SENTINEL_MASTER = env.str("REDIS_SENTINEL_MASTER", default="viswals")
# The Sentinels' own password (their requirepass), when they have one.
REDIS_SENTINEL_PASSWORD = env.str("REDIS_SENTINEL_PASSWORD", default="") or None


def _sentinel_address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {text!r} is not host:port")
    return host.strip("[]"), int(port)


# None, or what users.redis builds Sentinel-managed clients from.
REDIS_SENTINEL = (
    {
        "sentinels": [_sentinel_address(item) for item in REDIS_SENTINELS],
        "master": REDIS_SENTINEL_MASTER,
        # The Sentinels answer fast or are skipped for the next one.
        "sentinel_kwargs": {
            "password": REDIS_SENTINEL_PASSWORD,
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,
        },
    }
    if REDIS_SENTINELS
    else None
)
_redis_parts = redis.connection.parse_url(REDIS_URL)
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            # Short timeouts: a dead Redis must degrade reads to PostgreSQL, not hang them.
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 1.0,
        },
    },
}
if REDIS_SENTINEL:
    # django-redis' SentinelClient needs its connection factory named, and, given one URL, it
    # sends reads to a replica: a one-element list of the primary's URL keeps every read on the
    # primary (a replica may lag behind a write the client just made).
    _credentials = ""
    if _redis_parts.get("password") is not None:
        _credentials = f"{_redis_parts.get('username') or ''}:{_redis_parts['password']}@"
    CACHES["default"]["LOCATION"] = [
        f"redis://{_credentials}{REDIS_SENTINEL_MASTER}/{_redis_parts.get('db', 0)}?is_master=1"
    ]
    CACHES["default"]["OPTIONS"] |= {
        "CLIENT_CLASS": "django_redis.client.SentinelClient",
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": REDIS_SENTINEL["sentinels"],
        "SENTINEL_KWARGS": REDIS_SENTINEL["sentinel_kwargs"],
    }
# Every user key is "<USERS_CACHE_PREFIX>:<database>:<id>" (users.cache: <database> changes when the
# database is made again); bump the version when the cached shape changes.
USERS_CACHE_PREFIX = env.str("USERS_CACHE_PREFIX", default="users:v2")
# Expiry of cached users in seconds; 0 keeps them until they change or are deleted.
USERS_CACHE_TTL = env.int("USERS_CACHE_TTL", default=7 * 24 * 3600)

# --- Celery / RabbitMQ ----------------------------------------------------------------------
# Several nodes of one RabbitMQ cluster: their URLs separated by ";" (kombu's failover list).
# Producer and workers connect to one and move to the next when it fails, in turn.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//")
CELERY_BROKER_FAILOVER_STRATEGY = "round-robin"
CELERY_TASK_SERIALIZER = "orjson"  # plain JSON, encoded in C (viswals/celery.py)
CELERY_ACCEPT_CONTENT = ["orjson", "json"]
CELERY_TASK_IGNORE_RESULT = True  # batch outcomes are recorded in PostgreSQL (IngestBatch)
CELERY_RESULT_BACKEND = None
# Ack after the batch is committed; a worker that dies mid-batch gets it redelivered.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=2)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publisher confirms on AMQP: publish() returns only once the broker has the message.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# Seconds to try connecting to one node (Celery's default 4): how long a node whose host is down
# holds up a failover to the next.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=4.0)
if ";" in CELERY_BROKER_URL:
    # A connection that opens on first use (the producer pool's: a worker's start-up hello, a
    # retry's publish) gets kombu's connect timeout as the time for all its attempts: a first
    # node that does not answer (its host down) used it up, the next node was never tried,
    # and the worker stopped at start-up. Time for one try of each node:
    CELERY_BROKER_TRANSPORT_OPTIONS["connect_retries_timeout"] = (
        CELERY_BROKER_CONNECTION_TIMEOUT * len(CELERY_BROKER_URL.split(";")) + 1.0
    )
CELERY_TASK_DEFAULT_QUEUE = env.str("INGEST_QUEUE", default="ingest")
# The ingest queue's type: "classic" (one node holds it) or "quorum" (replicated with Raft over
# the cluster's nodes; a publisher confirm then means a majority of them hold the message:
# https://www.rabbitmq.com/docs/confirms#when-publishes-are-confirmed). A queue's type is fixed
# when it is declared: switching a queue that exists fails with 406 PRECONDITION_FAILED (the
# upgrade path: drain it first, or move to a new INGEST_QUEUE). Every process (web, workers,
# publish_csv) must use the same type: each declares the queue.
INGEST_QUEUE_TYPE = env.str("INGEST_QUEUE_TYPE", default="classic")
if INGEST_QUEUE_TYPE not in ("classic", "quorum"):
    raise ImproperlyConfigured(
        f"INGEST_QUEUE_TYPE must be classic or quorum, not {INGEST_QUEUE_TYPE!r}"
    )
CELERY_TASK_DEFAULT_QUEUE_TYPE = CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = INGEST_QUEUE_TYPE
# Celery's consumer, but with native delayed delivery set up through the node a worker is
# connected to, not through each URL in turn (viswals/celery_steps.py).
CELERY_WORKER_CONSUMER = "viswals.celery_steps:ClusterConsumer"
# Workers see a quorum queue and use per-consumer prefetch (quorum queues have no global QoS):
# the prefetch count is then fixed, so a task waiting for its countdown would hold a slot...
CELERY_WORKER_DETECT_QUORUM_QUEUES = True
if INGEST_QUEUE_TYPE == "quorum":
    # ...unless the broker delays it: Celery's native delayed delivery (retries with a
    # countdown wait in RabbitMQ, not in a worker), which needs a topic exchange, not the
    # direct one of a classic setup. https://docs.celeryq.dev/en/stable/getting-started/
    # backends-and-brokers/rabbitmq.html#using-quorum-queues
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Ingest ---------------------------------------------------------------------------------
INGEST_QUEUE = CELERY_TASK_DEFAULT_QUEUE
# Rows per task: measured end to end on 500k rows, 10,000 took 8.0-8.5 s where 5,000 took
# 8.8-9.0 s and 15,000 8.3 s (docs/performance.md).
INGEST_BATCH_SIZE = env.int("INGEST_BATCH_SIZE", default=10_000)
# Most bytes a batch's message may take; a batch is cut sooner when its rows or rejects could
# take more (counted at the most each character can encode to). Far under RabbitMQ's
# max_message_size (128 MiB by default), which refuses a bigger message outright; a batch of
# 10,000 ordinary rows counts as about 6 MiB, so only long rows or rejects make batches smaller.
INGEST_BATCH_MAX_BYTES = env.int("INGEST_BATCH_MAX_BYTES", default=16 << 20)
# Times publish_csv reconnects to a broker that dropped out before failing the run clearly.
INGEST_PUBLISH_RETRIES = env.int("INGEST_PUBLISH_RETRIES", default=20)
# A batch whose task has started this many times (crashes, redeliveries) is marked failed
# instead of being retried forever.
INGEST_MAX_ATTEMPTS = env.int("INGEST_MAX_ATTEMPTS", default=5)
# Seconds `publish_csv --wait` keeps reconnecting to PostgreSQL (and Redis, for the cache
# repair at the end) while it is unreachable — a restart, a failover — before it gives up with
# one line. The workers store the rows meanwhile; only the waiting stops.
INGEST_WAIT_DEPENDENCY_PATIENCE = env.float("INGEST_WAIT_DEPENDENCY_PATIENCE", default=60)

# Uploads (the admin's "Import users" page, ingest/uploads.py): files are written to a temporary
# file as they arrive, and ASGI request bodies spool to disk past this size, so no upload is
# held in memory. (Django's default is 2.5 MB.)
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 << 10
# Largest CSV file the admin imports (bytes); bigger files are refused with a message (413).
ADMIN_IMPORT_MAX_BYTES = env.int("ADMIN_IMPORT_MAX_BYTES", default=100 << 20)
# Room for the form's other fields and the multipart boundaries around the file: an import's
# body may declare this much more than ADMIN_IMPORT_MAX_BYTES.
ADMIN_IMPORT_MULTIPART_SLACK = 64 << 10
# Whether a session may send an import's large body, asked from its cookie before the body is
# read (viswals/request_limits.py); named here so the wiring imports no app's access rules.
ADMIN_IMPORT_SESSION_CHECK = "users.access.session_may_import"
# Uploads each web process publishes at once; one more is refused until one has finished.
ADMIN_IMPORT_CONCURRENCY = env.int("ADMIN_IMPORT_CONCURRENCY", default=2)
# Import uploads (bodies over ADMIN_MAX_BODY_BYTES, from sessions allowed to import) each web
# process receives at once, each spooled to disk as it arrives; one more gets 503 + Retry-After.
ADMIN_IMPORT_MAX_UPLOADS = env.int("ADMIN_IMPORT_MAX_UPLOADS", default=2)
# Bulk imports (ingest.indexes): a file of at least INGEST_BULK_MIN_ROWS lines into a table
# holding at most INGEST_BULK_TABLE_RATIO times as many users loads with the primary key only;
# the other indexes are built once when its last batch is stored (docs/ingest.md, "Bulk runs").
INGEST_BULK_MIN_ROWS = env.int("INGEST_BULK_MIN_ROWS", default=100_000)
INGEST_BULK_TABLE_RATIO = env.float("INGEST_BULK_TABLE_RATIO", default=1.0)
# A bulk run with no progress for this long is taken for dead: its indexes get restored.
INGEST_BULK_IDLE_TIMEOUT = env.int("INGEST_BULK_IDLE_TIMEOUT", default=300)
# Seconds between two checks, by each worker, for users indexes missing outside a bulk run
# (a run that died, a failed build): they are built again (0: only when a worker starts).
INGEST_INDEX_CHECK_INTERVAL = env.float("INGEST_INDEX_CHECK_INTERVAL", default=60)
# Index builds at the end of a bulk import: sessions side by side, and memory for each sort.
INGEST_INDEX_BUILD_PARALLEL = env.int("INGEST_INDEX_BUILD_PARALLEL", default=2)
INGEST_INDEX_BUILD_MEMORY = env.str("INGEST_INDEX_BUILD_MEMORY", default="512MB")

# --- Django REST framework ------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous request gets 401 with `WWW-Authenticate: Token`, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "users.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Default deny: every API view needs the model permission for what it does (users.access).
    "DEFAULT_PERMISSION_CLASSES": ["users.api.permissions.UsersAccess"],
    # DRF's defaults, with a JSON parser that makes a body nested too deeply a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "users.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # DRF's two, with a browsable API whose 401/403 pages say how to log in.
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "users.api.renderers.UsersBrowsableAPIRenderer",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["users.api.throttling.ClientRedisThrottle"],
    "EXCEPTION_HANDLER": "users.api.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# --- Access (users.access; docs/security.md) ------------------------------------------------
# Reading users (names, emails) needs an account with users.view_user. `false` opens every read
# path (API, fast path, stream, live page) to anyone: only for data that is not personal.
API_READS_REQUIRE_AUTH = env.bool("API_READS_REQUIRE_AUTH", default=True)
# Days a new API token is valid (create_api_client --expires-days overrides; 0 = no expiry).
API_TOKEN_EXPIRES_DAYS = env.int("API_TOKEN_EXPIRES_DAYS", default=90)
# Seconds a token's permissions are kept in Redis: how long a missed revocation could last.
API_TOKEN_CACHE_SECONDS = env.int("API_TOKEN_CACHE_SECONDS", default=30)
# Seconds a token PostgreSQL refused (unknown, expired, revoked) is refused from Redis instead:
# repeated bogus tokens cost no query. Each lookup also counts against the client address'
# window (API_ANON_THROTTLE_RATE) before it is made.
API_INVALID_TOKEN_CACHE_SECONDS = env.int("API_INVALID_TOKEN_CACHE_SECONDS", default=5)
# Requests per window ("<n>/second|minute|hour|day"; empty: no limit), counted in the shared
# Redis so a limit holds across web processes: per client address for anonymous clients...
API_ANON_THROTTLE_RATE = env.str("API_ANON_THROTTLE_RATE", default="1200/minute")
# ...and per account for authenticated ones.
API_USER_THROTTLE_RATE = env.str("API_USER_THROTTLE_RATE", default="6000/minute")
# Proxies (CIDR list) whose X-Forwarded-For is believed; from anyone else the socket's peer is
# the client (users/client_address.py). Empty: no proxy is trusted.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
# Request bodies larger than this are refused with 413 before anything reads them
# (viswals/request_limits.py); request headers over REQUEST_MAX_HEADER_BYTES get 431.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=2**20)
REQUEST_MAX_HEADER_BYTES = env.int("REQUEST_MAX_HEADER_BYTES", default=16 * 1024)
# Seconds a client has to send a whole request head (from the connection's opening, or from the
# first byte of a later request on it), and seconds a request body may go without a byte: then
# 408 and the connection is closed (viswals/http_protocol.py). Slow senders hold no socket long.
REQUEST_HEAD_TIMEOUT = env.float("REQUEST_HEAD_TIMEOUT", default=10.0)
REQUEST_BODY_IDLE_TIMEOUT = env.float("REQUEST_BODY_IDLE_TIMEOUT", default=30.0)
# Bodies under /admin/ may be this large instead (the CSV import: ADMIN_IMPORT_MAX_BYTES, for
# sessions allowed to import).
ADMIN_MAX_BODY_BYTES = env.int("ADMIN_MAX_BODY_BYTES", default=2**20)
# PostgreSQL cancels a read of the API's user lists or of the users admin after this many
# milliseconds (users.selectors.bounded_read): the client gets a 503 instead of a request that
# holds a connection and a core for as long as it likes. 0 turns the limit off.
API_QUERY_TIMEOUT_MS = env.int("API_QUERY_TIMEOUT_MS", default=2000)
# Django's own cap on bodies it reads into memory: the same limit, as a second line.
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
SPECTACULAR_SETTINGS = {
    "TITLE": "viswals users API",
    "DESCRIPTION": "Users imported from CSV or created here; errors are JSON.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets from drf-spectacular-sidecar: /api/docs/ works without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # The enum hook is drf-spectacular's default; ours adds what the views do not declare
    # (answers from around them, the field rules' constraints, GET /users/sse).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "users.api.schema.postprocess_schema",
    ],
}

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "static/"
# Where collectstatic writes and whitenoise serves from (the image: /app/staticfiles).
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security (production) ------------------------------------------------------------------
# Secure cookies are on whenever debug is off; the HTTPS redirect and HSTS are switched on by
# the production environment (.env.example), since a proxy in front may do them instead.
# `manage.py check --deploy` passes with that environment (tests/ops/test_settings.py).
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# Trust X-Forwarded-Proto from the proxy (only if the proxy always sets it). uvicorn runs with
# --no-proxy-headers: it would otherwise take X-Forwarded-For from any local peer as the client,
# bypassing TRUSTED_PROXIES.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
# Probes and the metrics scraper talk plain HTTP to the process itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# HSTS: browsers refuse plain HTTP for this long once they have seen it; start small.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)

# /metrics answers only "Authorization: Bearer <METRICS_TOKEN>" (compared in constant time);
# unset, it answers 403 to everyone. See docs/security.md, "Metrics and probes".
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# /readyz answers "degraded" (still 200) naming each of these that says so (viswals/health.py).
READINESS_DEGRADED_CHECKS = {"users_indexes": "ingest.checks.users_indexes_degraded"}
# The latest ingest run (an IngestRun, or None) the landing page shows (users/pages.py).
LANDING_PAGE_LATEST_RUN = "ingest.selectors.ingest_run_latest"
# Collectors of the apps' figures that /metrics reads at scrape time (viswals/metrics.py).
METRICS_COLLECTORS = [
    "ingest.metrics.IngestCollector",
    "users.metrics.StaleCacheCollector",
    "viswals.db_router.ReplicaCollector",
]

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# One JSON object per line in production (for log shippers), readable text in development.
# Request ids and ingest run/batch numbers are added by viswals.logging.ContextFilter.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
# Django's loggers of SuspiciousOperation errors a client can cause (viswals.logging).
_CLIENT_ERROR_LOGGERS = [
    f"django.security.{name}"
    for name in ("DisallowedHost", "RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent",
                 "SuspiciousMultipartForm", "SuspiciousSession", "InvalidSessionKey")
]  # fmt: skip
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "viswals.logging.ContextFilter"},
        "without_traceback": {"()": "viswals.logging.WithoutTraceback"},
        "without_query": {"()": "viswals.logging.RequestWithoutQuery"},
    },
    "formatters": {
        "text": {
            "()": "viswals.logging.TextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "viswals.logging.json_formatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            # Method and path only: query strings hold searched emails and names.
            "filters": ["context", "without_query"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default logging gives "django" a console handler of its own with debug on,
        # and "django.server" (runserver) another: every 4xx was written twice. One handler,
        # ours, for all of them.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": ["console"], "propagate": False},
        "django.db.backends": {"level": "INFO"},
        # Errors a client caused (a bad Host header...) are one line, not a traceback.
        **{name: {"filters": ["without_traceback"]} for name in _CLIENT_ERROR_LOGGERS},
        # Failed logins and lockouts (WARNING), not a banner in every command and a line per
        # successful login.
        "axes": {"level": "WARNING"},
        # uvicorn's worker processes log through the same handler once Django is loaded (its
        # access log, off in the Procfile, keeps uvicorn's own format).
        "uvicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# --- Server-Sent Events (users.stream) --------------------------------------------------------
# Named STREAM_*: the stream is our own; the old EVENTSTREAM_* names are not read any more
# (docs/configuration.md lists them).
# The channel's name is part of its history's keys (below), as is the key prefix.
STREAM_CHANNEL = env.str("STREAM_CHANNEL", default="users")
# The Redis holding the event history, which every web process reads (users.stream): redis.Redis
# / redis.asyncio.Redis keyword arguments, derived from REDIS_URL.
# With Sentinel, host and port come from the Sentinels (users.redis).
STREAM_REDIS = {
    key: _redis_parts[key]
    for key in ("db", "username", "password", *(() if REDIS_SENTINEL else ("host", "port")))
    if key in _redis_parts
}
if "path" in _redis_parts:  # unix:// URL
    STREAM_REDIS["unix_socket_path"] = _redis_parts["path"]
if REDIS_URL.startswith("rediss://"):
    STREAM_REDIS["ssl"] = True
# Events are sent after commit, inside the request or task: a stuck Redis must not hold them up
# for long (the error is logged, the write stands).
STREAM_REDIS |= {"socket_connect_timeout": 2, "socket_timeout": 5}
# Event history for Last-Event-ID resume lives in Redis (one capped stream per channel,
# users.stream.history), never in the database: no open stream holds a database connection.
# Prefix of the history keys ("<prefix>:log:<channel>", "<prefix>:id:<channel>").
STREAM_KEY_PREFIX = env.str("STREAM_KEY_PREFIX", default="sse:v1")
# Events kept per channel for resume; a client further behind gets a `stream-reset` event.
STREAM_HISTORY = env.int("STREAM_HISTORY", default=1000)
# ...and at most this many megabytes of event data (a users.ingested batch event is ~1 MB).
STREAM_HISTORY_MB = env.int("STREAM_HISTORY_MB", default=200)
# Open streams per client (an account; the client address for anonymous clients in public-read
# mode), across every web process; one more gets 429.
SSE_MAX_STREAMS_PER_CLIENT = env.int("SSE_MAX_STREAMS_PER_CLIENT", default=10)
# History one catch-up (a Last-Event-ID resume, or a client fallen behind) may send: events and
# bytes. Beyond either, the client gets `stream-reset` and reloads through the API. 8 MiB is
# about 8 ingest batch events; 1,000 events is the whole default history of small ones.
SSE_REPLAY_MAX_EVENTS = env.int("SSE_REPLAY_MAX_EVENTS", default=1000)
SSE_REPLAY_MAX_BYTES = env.int("SSE_REPLAY_MAX_BYTES", default=8 * 2**20)
# A stream's connect counts as one request against the client's rate limit (the API's
# API_ANON_THROTTLE_RATE / API_USER_THROTTLE_RATE window), and the history it replays as one
# request per this many bytes: at 64 KiB, a full 8 MiB replay is 129 requests.
SSE_REPLAY_BYTES_PER_REQUEST = env.int("SSE_REPLAY_BYTES_PER_REQUEST", default=64 * 1024)
# Seconds a write to a stream's client may wait (it stopped reading) before the connection is
# dropped: a stalled client costs one pending write, not an ever-growing buffer.
SSE_SEND_TIMEOUT = env.float("SSE_SEND_TIMEOUT", default=30.0)
