"""Settings for the whole service, driven by environment variables (README: Configuration).

Every variable is read once, here, through the typed helpers of `wave_site.config`; a malformed value
raises ImproperlyConfigured naming the variable, and `manage.py` turns that into a one-line error.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from builds.backends.limits import env_memory, env_pids
from registry.reference import InvalidReferenceError, parse_image
from wave_site import __version__
from wave_site.config import env_bool, env_int, env_list, env_str, env_url, registry_credentials_file
from wave_site.datadir import embedded_broker_folders
from wave_site.keys import fernet_key, master_secret
from wave_site.storage import s3_blob_storage

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Identity ---------------------------------------------------------------------------------
WAVE_VERSION = __version__


# The configured commit; when unset, `wave_site.config.commit_id()` asks git once, when first shown.
WAVE_COMMIT_ID = env_str("WAVE_COMMIT_ID")

# --- Local state ------------------------------------------------------------------------------
# Made private (0700) with its folders by `manage.py` (wave_site.datadir); importing settings creates nothing,
# except the generated secret key (and so the folder) on a first start without WAVE_SECRET_KEY.
DATA_DIR = Path(env_str("WAVE_DATA_DIR") or BASE_DIR / ".wave").expanduser().resolve()
try:
    _MASTER_SECRET = master_secret(configured=env_str("WAVE_SECRET_KEY"), data_dir=DATA_DIR)
except OSError as exc:
    raise ImproperlyConfigured(f"WAVE_DATA_DIR {str(DATA_DIR)!r} cannot hold the secret key: {exc.strerror}") from None
SECRET_KEY = _MASTER_SECRET
SECRETS_ENCRYPTION_KEY = fernet_key(_MASTER_SECRET)

# --- Web --------------------------------------------------------------------------------------
DEBUG = env_bool("WAVE_DEBUG", False)
WAVE_PORT = env_int("WAVE_PORT", 9090, minimum=1, maximum=65535)
# The public URL (its host:port names every targetImage) follows the port listened on unless set.
WAVE_SERVER_URL = env_url("WAVE_SERVER_URL", f"http://localhost:{WAVE_PORT}", schemes=frozenset({"http", "https"}))
WAVE_SERVER_URL = WAVE_SERVER_URL.rstrip("/")
WAVE_BIND = env_str("WAVE_BIND", "0.0.0.0")
WAVE_WEB_WORKERS = env_int("WAVE_WEB_WORKERS", 2, minimum=1, maximum=64)
# The registry proxy answers to whatever name clients pull from, so every host is allowed by default.
ALLOWED_HOSTS = env_list("WAVE_ALLOWED_HOSTS", ["*"])
_server = urlsplit(WAVE_SERVER_URL)
CSRF_TRUSTED_ORIGINS = [f"{_server.scheme}://{_server.netloc}"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("WAVE_BEHIND_TLS_PROXY", False) else None
# Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto the web server believes (IPs or networks). None by
# default: otherwise anyone on the machine could pick the client address that rate limits and the failed-login
# throttle count by.
WAVE_TRUSTED_PROXIES = env_list("WAVE_TRUSTED_PROXIES", [])
for _proxy in WAVE_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"WAVE_TRUSTED_PROXIES must list IP addresses or networks, got {_proxy!r}") from None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "wave_site",
    "credentials",
    "builds",
    "requests_app",
]

MIDDLEWARE = [
    "wave_site.request_id.RequestIdMiddleware",  # X-Request-Id, and the id in the logs of the request and its tasks
    "wave_site.middleware.InlineSecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "wave_site.metrics.middleware.RequestMetricsMiddleware",  # counts only with WAVE_METRICS_ENABLED
    "wave_site.errors.ErrorIdMiddleware",
    # Session, CSRF, auth, messages and X-Frame-Options, for the admin and session-cookie requests only.
    "wave_site.middleware.SessionScopedMiddleware",
]
# The admin's checks look for the session middleware in MIDDLEWARE; SessionScopedMiddleware runs it.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]

ROOT_URLCONF = "wave_site.urls"
ASGI_APPLICATION = "wave_site.asgi.application"
WSGI_APPLICATION = "wave_site.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "wave_site.context_processors.service",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", None, schemes=frozenset({"postgres", "postgresql"}))
_synchronous_commit = (env_str("WAVE_DB_SYNCHRONOUS_COMMIT", "on") or "on").lower()
if _synchronous_commit not in {"on", "off", "local", "remote_write", "remote_apply"}:
    raise ImproperlyConfigured(
        f"WAVE_DB_SYNCHRONOUS_COMMIT must be on, off, local, remote_write or remote_apply, got {_synchronous_commit!r}"
    )
if DATABASE_URL:
    _db = dj_database_url.parse(DATABASE_URL)
    _db["ENGINE"] = "django.db.backends.postgresql"
    _db["CONN_MAX_AGE"] = 0  # connections come from the pool below; Django must not keep its own
    # The pool checks a connection before lending it: after a database restart, no request (or job) fails
    # on a pooled connection that died with it. One empty query per checkout.
    _db["CONN_HEALTH_CHECKS"] = True
    _db["OPTIONS"] = {
        # `timeout` bounds how long a request waits for a connection: with the database down, the request
        # answers 503 after it (wave_site.errors), instead of hanging; the pool reconnects by itself.
        "pool": {
            "min_size": 2,
            "max_size": env_int("WAVE_DB_POOL_SIZE", 20, minimum=2),
            "timeout": env_int("WAVE_DB_POOL_TIMEOUT", 2, minimum=1),
            # A failed reconnection is retried with a doubling delay until this many seconds, then the next
            # request starts a new one: the pool finds a database that is back within seconds, not minutes.
            "reconnect_timeout": 5,
        },
        "connect_timeout": 2,
        # `off` trades durability of the last fraction of a second of writes (on a database crash) for latency.
        "options": f"-c synchronous_commit={_synchronous_commit}",
    }
    DATABASES = {"default": _db}
else:
    # Embedded default: SQLite in WAL mode so that web and worker read while one of them writes.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "wave.sqlite3"),
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and broker -------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", None, schemes=frozenset({"redis", "rediss"}))
if REDIS_URL:
    # django-redis keeps one connection pool per process; Django's own Redis backend makes a pool per
    # cache instance, and under ASGI that means a new connection for every request.
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            # Short: with Redis down or hung, a request answers 503 within seconds (wave_site.errors).
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 2},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    # An unacknowledged message (its worker was killed) is delivered again after this long. Durable jobs
    # do not depend on it (the reaper re-queues their rows sooner); a task still running then is delivered
    # twice, and its claim (a compare-and-set on its row) makes the second delivery do nothing.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 300}
    # Publishing runs on the request path: with Redis down or hung it must fail within seconds (see
    # CELERY_TASK_PUBLISH_RETRY_POLICY), not block the request forever.
    CELERY_BROKER_TRANSPORT_OPTIONS.update({"socket_connect_timeout": 1, "socket_timeout": 2})
else:
    # Embedded default: a file cache (shared by every local process) and Celery's filesystem transport.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **{name: str(folder) for name, folder in embedded_broker_folders(DATA_DIR).items()},
        "store_processed": False,
    }

# --- Celery (wave_site/celery.py reads the CELERY_ names) -------------------------------------
WAVE_BUILD_TIMEOUT = env_int("WAVE_BUILD_TIMEOUT", 900, minimum=1)
# A build's log is kept in the blob store up to this many bytes (a last line says when it was cut).
WAVE_BUILD_LOG_MAX_BYTES = env_int("WAVE_BUILD_LOG_MAX_BYTES", 4 * 1024 * 1024, minimum=1024)
# Durable builds (builds.services): a running build beats every HEARTBEAT s; the reaper (every REAP_INTERVAL s)
# fails one silent for STALE_AFTER s, or running past the build timeout + GRACE s ("build worker lost").
WAVE_BUILD_HEARTBEAT = env_int("WAVE_BUILD_HEARTBEAT", 5, minimum=1)
WAVE_BUILD_STALE_AFTER = env_int("WAVE_BUILD_STALE_AFTER", 60, minimum=2)
WAVE_BUILD_GRACE = env_int("WAVE_BUILD_GRACE", 120, minimum=0)
WAVE_BUILD_REAP_INTERVAL = env_int("WAVE_BUILD_REAP_INTERVAL", 30, minimum=1)
if WAVE_BUILD_STALE_AFTER < 2 * WAVE_BUILD_HEARTBEAT:
    raise ImproperlyConfigured("WAVE_BUILD_STALE_AFTER must be at least twice WAVE_BUILD_HEARTBEAT")
# The build's network (builds.backends.network). `filtered` (the default; empty is the same): base images are pulled
# first, then the build (RUN steps, ADD URLs, the layer cache) runs in a network namespace of its own that reaches
# public addresses only, through slirp4netns and nftables. `none`: that namespace has only `lo` (no layer cache).
# `host`: RUN steps share the worker's network (buildah's chroot isolation knows no other network of its own).
WAVE_BUILD_NETWORK = env_str("WAVE_BUILD_NETWORK") or "filtered"
if WAVE_BUILD_NETWORK not in {"filtered", "host", "none"}:
    raise ImproperlyConfigured(
        f"WAVE_BUILD_NETWORK must be 'filtered' (the default), 'host' or 'none', got {WAVE_BUILD_NETWORK!r}"
    )
# Each build's memory (bytes, or 4g, 512m...; 0 = no limit) and processes and threads (0 = no limit), enforced by a
# cgroup per build (builds.backends.limits); where this host's cgroups cannot be used, builds run without (logged).
WAVE_BUILD_MEMORY = env_memory()
WAVE_BUILD_PIDS = env_pids()
# Builds run in prefork processes (WAVE_WORKER_CONCURRENCY at once); layer downloads (I/O-bound) in a worker of
# their own with a thread per download; the periodic tasks in a third (wave_site.celery).
WAVE_WORKER_CONCURRENCY = env_int("WAVE_WORKER_CONCURRENCY", 2, minimum=1, maximum=64)
WAVE_DOWNLOAD_CONCURRENCY = env_int("WAVE_DOWNLOAD_CONCURRENCY", 16, minimum=1, maximum=256)
# Layer downloads one client (Tower user, else IP) may have queued or running at once: a request that would
# start more is refused (429, or 400 when it alone needs more); 0 = no cap. Below WAVE_DOWNLOAD_CONCURRENCY,
# one client never takes every download slot.
WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT = env_int("WAVE_MAX_ACTIVE_DOWNLOADS_PER_CLIENT", 8, minimum=0)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True  # status lives in the database, never in a result backend
CELERY_RESULT_BACKEND = None
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True  # tasks are idempotent: a task lost with its worker runs again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"builds.*": {"queue": "builds"}, "requests_app.layer_*": {"queue": "layers"}}
# Builds may take the whole build timeout; everything else is short.
CELERY_TASK_SOFT_TIME_LIMIT = WAVE_BUILD_TIMEOUT + 30
CELERY_TASK_TIME_LIMIT = WAVE_BUILD_TIMEOUT + 90
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps reconnecting to a broker that is down, however long (Celery gives up after 100 tries, ~45 min,
# and `manage.py run` stops every process when one exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A publish that cannot reach the broker fails at once (refused) or after the 2 s socket timeout (hung),
# raising kombu's OperationalError: no retries on the request path. An enqueue after commit logs it in one
# line and leaves its row queued, and the reaper sends it again (requests_app.downloads). redis-py itself
# reconnects a pooled connection that died with a restarted Redis.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 0}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Durable layer downloads (requests_app.downloads): a running download beats every HEARTBEAT s; the reaper
# (every REAP_INTERVAL s) re-queues one silent for STALE_AFTER s, or queued that long with no worker taking
# it, and fails it with a reason once it was claimed MAX_ATTEMPTS times.
WAVE_LAYER_DOWNLOAD_HEARTBEAT = env_int("WAVE_LAYER_DOWNLOAD_HEARTBEAT", 5, minimum=1)
WAVE_LAYER_DOWNLOAD_STALE_AFTER = env_int("WAVE_LAYER_DOWNLOAD_STALE_AFTER", 60, minimum=2)
WAVE_LAYER_DOWNLOAD_MAX_ATTEMPTS = env_int("WAVE_LAYER_DOWNLOAD_MAX_ATTEMPTS", 3, minimum=1, maximum=100)
WAVE_LAYER_REAP_INTERVAL = env_int("WAVE_LAYER_REAP_INTERVAL", 30, minimum=1)
if WAVE_LAYER_DOWNLOAD_STALE_AFTER < 2 * WAVE_LAYER_DOWNLOAD_HEARTBEAT:
    raise ImproperlyConfigured("WAVE_LAYER_DOWNLOAD_STALE_AFTER must be at least twice WAVE_LAYER_DOWNLOAD_HEARTBEAT")
# Blob garbage collection (wave_site.blob_gc): every INTERVAL s (0: never; `manage.py gc_blobs` by hand), blobs
# nothing references any more and last written more than GRACE s ago are deleted.
WAVE_BLOB_GC_GRACE = env_int("WAVE_BLOB_GC_GRACE", 24 * 3600, minimum=3600)
WAVE_BLOB_GC_INTERVAL = env_int("WAVE_BLOB_GC_INTERVAL", 24 * 3600, minimum=0)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "purge-expired-container-requests": {"task": "requests_app.container_request_purge", "schedule": 3600.0},
    "purge-retired-pairing-keys": {"task": "credentials.pairing_key_purge", "schedule": 3600.0},
    "reap-builds": {"task": "builds.build_reap", "schedule": float(WAVE_BUILD_REAP_INTERVAL),
                    "options": {"queue": "default"}},
    # On the default queue: the reaper must not wait behind the downloads it watches.
    "reap-layer-downloads": {"task": "requests_app.layer_download_reap", "schedule": float(WAVE_LAYER_REAP_INTERVAL),
                             "options": {"queue": "default"}},
}  # fmt: skip
if WAVE_BLOB_GC_INTERVAL:
    CELERY_BEAT_SCHEDULE["collect-blobs"] = {"task": "wave_site.blob_gc", "schedule": float(WAVE_BLOB_GC_INTERVAL)}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Blob store and static files --------------------------------------------------------------
# Injected layers and generated documents. A folder of the data dir by default; `s3://bucket[/prefix]`
# for an S3-compatible store shared by several machines (credentials: the usual AWS_* variables, read
# by boto3). Pulls are then redirected to short-lived presigned URLs: no layer bytes pass through us.
WAVE_BLOB_STORE = env_url("WAVE_BLOB_STORE", None, schemes=frozenset({"s3"}))
WAVE_S3_ENDPOINT_URL = env_url("WAVE_S3_ENDPOINT_URL", None, schemes=frozenset({"http", "https"}))
WAVE_S3_REGION = env_str("WAVE_S3_REGION")
WAVE_BLOB_URL_TTL = env_int("WAVE_BLOB_URL_TTL", 900, minimum=60, maximum=7 * 24 * 3600)
if WAVE_BLOB_STORE:
    try:
        _blob_storage = s3_blob_storage(
            WAVE_BLOB_STORE, endpoint_url=WAVE_S3_ENDPOINT_URL, region=WAVE_S3_REGION, url_ttl=WAVE_BLOB_URL_TTL
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"WAVE_BLOB_STORE {exc}") from None
else:
    _blob_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": DATA_DIR / "blobs"},
    }
# Blobs on the filesystem are the service's alone, whatever the umask of the process writing them.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
STORAGES = {
    "default": _blob_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
# Serve admin and API-docs assets straight from the installed apps: no collectstatic step to forget.
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_AUTOREFRESH = DEBUG

# --- Recipe builds (builds.recipes): the images and packages of generated Containerfiles ----------
WAVE_CONDA_MAMBA_IMAGE = env_str("WAVE_CONDA_MAMBA_IMAGE", "mambaorg/micromamba:1.5.10-noble")
WAVE_CONDA_BASE_IMAGE = env_str("WAVE_CONDA_BASE_IMAGE", "ubuntu:24.04")
WAVE_CONDA_BASE_PACKAGES = env_str("WAVE_CONDA_BASE_PACKAGES", "conda-forge::procps-ng")
WAVE_CONDA_CHANNELS = env_list("WAVE_CONDA_CHANNELS", ["conda-forge", "bioconda"])
WAVE_SPACK_BUILDER_IMAGE = env_str("WAVE_SPACK_BUILDER_IMAGE", "spack/ubuntu-jammy:v0.20.0")
WAVE_SPACK_RUNNER_IMAGE = env_str("WAVE_SPACK_RUNNER_IMAGE", "ubuntu:22.04")
WAVE_SPACK_CACHE_MIRROR = env_str("WAVE_SPACK_CACHE_MIRROR", "")
WAVE_CRAN_R_IMAGE = env_str("WAVE_CRAN_R_IMAGE", "rocker/r-ver:4.4.1")
# rocker/r-ver has R, littler (install2.r) and docopt already; `ps` is what it lacks (Nextflow's task metrics).
WAVE_CRAN_BASE_PACKAGES = env_str("WAVE_CRAN_BASE_PACKAGES", "procps")
_recipe_images = {
    "WAVE_CONDA_MAMBA_IMAGE": WAVE_CONDA_MAMBA_IMAGE,
    "WAVE_CONDA_BASE_IMAGE": WAVE_CONDA_BASE_IMAGE,
    "WAVE_SPACK_BUILDER_IMAGE": WAVE_SPACK_BUILDER_IMAGE,
    "WAVE_SPACK_RUNNER_IMAGE": WAVE_SPACK_RUNNER_IMAGE,
    "WAVE_CRAN_R_IMAGE": WAVE_CRAN_R_IMAGE,
}
for _name, _image in _recipe_images.items():
    try:
        parse_image(_image)
    except InvalidReferenceError as _error:
        raise ImproperlyConfigured(f"{_name} must be an image name: {_error.message}") from None
_recipe_words = {
    "WAVE_CONDA_BASE_PACKAGES": WAVE_CONDA_BASE_PACKAGES,
    "WAVE_SPACK_CACHE_MIRROR": WAVE_SPACK_CACHE_MIRROR,
    "WAVE_CRAN_BASE_PACKAGES": WAVE_CRAN_BASE_PACKAGES,
}
for _name, _words in _recipe_words.items():
    if not _words.isprintable():
        raise ImproperlyConfigured(f"{_name} must be a single line of printable characters")

# --- Registries and builds --------------------------------------------------------------------
WAVE_REGISTRY_PORT = env_int("WAVE_REGISTRY_PORT", 5000, minimum=1, maximum=65535)
_configured_build_repo = env_str("WAVE_BUILD_REPO")
# The local registry `make run` starts serves as build and cache repository when none is configured.
WAVE_LOCAL_REGISTRY = _configured_build_repo is None
WAVE_BUILD_REPO = _configured_build_repo or f"localhost:{WAVE_REGISTRY_PORT}/wave/build"
WAVE_CACHE_REPO = env_str("WAVE_CACHE_REPO") or (
    f"localhost:{WAVE_REGISTRY_PORT}/wave/cache" if WAVE_LOCAL_REGISTRY else None
)
for _name, _repo in (("WAVE_BUILD_REPO", WAVE_BUILD_REPO), ("WAVE_CACHE_REPO", WAVE_CACHE_REPO)):
    if _repo is not None and ("://" in _repo or "/" not in _repo.strip("/")):
        raise ImproperlyConfigured(f"{_name} must be '<registry host>/<repository>' without protocol, got {_repo!r}")

WAVE_INSECURE_REGISTRIES = env_list("WAVE_INSECURE_REGISTRIES", ["localhost", "127.0.0.1"])
WAVE_SSRF_ALLOW = env_list("WAVE_SSRF_ALLOW", [])
WAVE_TOKEN_TTL = env_int("WAVE_TOKEN_TTL", 129600, minimum=60)
WAVE_REQUEST_RETENTION_DAYS = env_int("WAVE_REQUEST_RETENTION_DAYS", 7, minimum=0)
WAVE_BUILD_RETENTION_DAYS = env_int("WAVE_BUILD_RETENTION_DAYS", 30, minimum=0)
WAVE_UPSTREAM_CACHE_TTL = env_int("WAVE_UPSTREAM_CACHE_TTL", 60, minimum=0)
WAVE_CONTAINER_FILE_MAX_SIZE = env_int("WAVE_CONTAINER_FILE_MAX_SIZE", 10000, minimum=1)
WAVE_CONDA_FILE_MAX_SIZE = env_int("WAVE_CONDA_FILE_MAX_SIZE", 50000, minimum=1)
WAVE_LAYER_MAX_SIZE = env_int("WAVE_LAYER_MAX_SIZE", 14_000_000, minimum=1)
WAVE_MAX_LAYERS = env_int("WAVE_MAX_LAYERS", 64, minimum=1, maximum=10_000)
# A request's entrypoint, cmd, env and workingDir are stored with its token and read by every pull: at most
# WAVE_MAX_CONFIG_BYTES of JSON together, at most WAVE_MAX_CONFIG_ENTRIES entries in each list (400 beyond).
WAVE_MAX_CONFIG_BYTES = env_int("WAVE_MAX_CONFIG_BYTES", 64 * 1024, minimum=1024)
WAVE_MAX_CONFIG_ENTRIES = env_int("WAVE_MAX_CONFIG_ENTRIES", 1000, minimum=1)
WAVE_LAYER_WAIT_SECONDS = env_int("WAVE_LAYER_WAIT_SECONDS", 60, minimum=0)
WAVE_LAYER_DOWNLOAD_MAX_BYTES = env_int("WAVE_LAYER_DOWNLOAD_MAX_BYTES", 2 * 1024**3, minimum=1)
WAVE_LAYER_DOWNLOAD_TIMEOUT = env_int("WAVE_LAYER_DOWNLOAD_TIMEOUT", 600, minimum=1)
# A download fails when it receives less than MIN_RATE bytes/s over RATE_WINDOW s, or nothing for that long.
WAVE_LAYER_DOWNLOAD_MIN_RATE = env_int("WAVE_LAYER_DOWNLOAD_MIN_RATE", 1024, minimum=0)
WAVE_LAYER_DOWNLOAD_RATE_WINDOW = env_int("WAVE_LAYER_DOWNLOAD_RATE_WINDOW", 30, minimum=1)
WAVE_MAX_REQUEST_BYTES = env_int("WAVE_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
# Django's own cap on a body read into memory (2.5 MiB by default) would refuse `data:` layers well under the
# documented limits; the ASGI entry point (wave_site.asgi) enforces WAVE_MAX_REQUEST_BYTES before Django reads.
DATA_UPLOAD_MAX_MEMORY_SIZE = WAVE_MAX_REQUEST_BYTES
WAVE_RATE_LIMIT_BUILDS_PER_HOUR = env_int("WAVE_RATE_LIMIT_BUILDS_PER_HOUR", 0, minimum=0)
WAVE_RATE_LIMIT_PULLS_PER_MINUTE = env_int("WAVE_RATE_LIMIT_PULLS_PER_MINUTE", 0, minimum=0)
WAVE_TOWER_ENDPOINT = env_url(
    "WAVE_TOWER_ENDPOINT", "https://api.cloud.seqera.io", schemes=frozenset({"http", "https"})
)
# --- Credentials (credentials/) ---------------------------------------------------------------
# A caller's registry credentials found in Tower are cached (sealed) for this many seconds; lookups that
# fail are not cached. Tower calls time out after WAVE_TOWER_TIMEOUT s and are retried on network errors.
WAVE_TOWER_CACHE_TTL = env_int("WAVE_TOWER_CACHE_TTL", 60, minimum=0, maximum=3600)
WAVE_TOWER_TIMEOUT = env_int("WAVE_TOWER_TIMEOUT", 10, minimum=1, maximum=300)
WAVE_TOWER_RETRIES = env_int("WAVE_TOWER_RETRIES", 2, minimum=0, maximum=10)
# Pairing keys (POST /pairing): handed out for LEASE s, kept (decrypting) for RETENTION s after creation.
WAVE_PAIRING_LEASE = env_int("WAVE_PAIRING_LEASE", 24 * 3600, minimum=60)
WAVE_PAIRING_RETENTION = env_int("WAVE_PAIRING_RETENTION", 30 * 24 * 3600, minimum=120)
if WAVE_PAIRING_RETENTION <= WAVE_PAIRING_LEASE:
    raise ImproperlyConfigured("WAVE_PAIRING_RETENTION must be longer than WAVE_PAIRING_LEASE")
# POST /validate-creds per client address (an IPv6 client by its /64) and minute (each tries a password at a
# registry), and per account (registry + user name) and hour from all addresses together: 429 beyond.
WAVE_VALIDATE_CREDS_PER_MINUTE = env_int("WAVE_VALIDATE_CREDS_PER_MINUTE", 10, minimum=1)
WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR = env_int("WAVE_VALIDATE_CREDS_PER_ACCOUNT_PER_HOUR", 20, minimum=1)
# POST /pairing per client address (IPv6: its /64) and minute (a new endpoint costs an RSA key pair): 429 beyond.
WAVE_PAIRING_PER_MINUTE = env_int("WAVE_PAIRING_PER_MINUTE", 10, minimum=1)

WAVE_REGISTRY_CREDENTIALS = env_str("WAVE_REGISTRY_CREDENTIALS")
if WAVE_REGISTRY_CREDENTIALS and not Path(WAVE_REGISTRY_CREDENTIALS).is_file():
    raise ImproperlyConfigured(f"WAVE_REGISTRY_CREDENTIALS names no readable file: {WAVE_REGISTRY_CREDENTIALS!r}")
if WAVE_REGISTRY_CREDENTIALS:
    registry_credentials_file(WAVE_REGISTRY_CREDENTIALS)  # a malformed file stops the start (read again on change)

# --- Operators --------------------------------------------------------------------------------
WAVE_ADMIN_USER = env_str("WAVE_ADMIN_USER", "admin")
WAVE_ADMIN_PASSWORD = env_str("WAVE_ADMIN_PASSWORD")
# Failed operator logins (admin form, API Basic auth) per client address and window; past the maximum, the
# address gets 429 until the window ends, and no password is checked (wave_site.authentication).
WAVE_LOGIN_MAX_FAILURES = env_int("WAVE_LOGIN_MAX_FAILURES", 10, minimum=1)
WAVE_LOGIN_FAILURE_WINDOW = env_int("WAVE_LOGIN_FAILURE_WINDOW", 300, minimum=1)
AUTHENTICATION_BACKENDS = ["wave_site.authentication.ThrottledModelBackend"]

# --- API and OpenAPI --------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["wave_site.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "EXCEPTION_HANDLER": "wave_site.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Wave container provisioning API",
    "DESCRIPTION": (
        "Request containers (existing images augmented with layers and configuration, or images built "
        "on demand) and pull them through the service's OCI registry proxy."
    ),
    "VERSION": WAVE_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "HealthStatusEnum": ["UP", "DOWN"],
        "ContainerStatusEnum": ["PENDING", "BUILDING", "DONE"],
    },
    # The usage metrics API's operator credentials (wave_site.metrics.views).
    "APPEND_COMPONENTS": {"securitySchemes": {"metricsBasicAuth": {"type": "http", "scheme": "basic"}}},
}

# --- Metrics (wave_site.metrics) ----------------------------------------------------------------
# Wave's usage metrics API (/v1alpha2/metrics/...): off (404) unless both are set; HTTP Basic auth.
WAVE_METRICS_USER = env_str("WAVE_METRICS_USER") or ""
WAVE_METRICS_PASSWORD = env_str("WAVE_METRICS_PASSWORD") or ""
WAVE_METRICS_RETENTION_DAYS = env_int("WAVE_METRICS_RETENTION_DAYS", 365, minimum=1)
# Prometheus /metrics: off (404) unless enabled; scrapers send `Authorization: Bearer <WAVE_METRICS_TOKEN>`.
WAVE_METRICS_ENABLED = env_bool("WAVE_METRICS_ENABLED", False)
WAVE_METRICS_TOKEN = env_str("WAVE_METRICS_TOKEN") or ""
if WAVE_METRICS_ENABLED and not WAVE_METRICS_TOKEN:
    raise ImproperlyConfigured("WAVE_METRICS_ENABLED needs WAVE_METRICS_TOKEN (the scrapers' bearer token)")
if WAVE_METRICS_ENABLED:
    # uvicorn's workers count into files, summed at scrape; one folder per host, since containers sharing the data
    # volume may reuse process ids (wave_site.metrics.prometheus). Read when prometheus_client is first imported.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "prometheus" / socket.gethostname()))
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

# --- Misc -------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

WAVE_LOG_LEVEL = (env_str("WAVE_LOG_LEVEL", "INFO") or "INFO").upper()
if WAVE_LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"WAVE_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {WAVE_LOG_LEVEL!r}"
    )
# `json`: one JSON object per line, with the id of the request (and of the request that enqueued a task).
WAVE_LOG_FORMAT = (env_str("WAVE_LOG_FORMAT", "plain") or "plain").lower()
if WAVE_LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"WAVE_LOG_FORMAT must be plain or json, got {WAVE_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "wave_site.request_id.JsonFormatter"},
    },
    # Outages of the database or Redis are one WARNING line each, without a traceback, in every process.
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": WAVE_LOG_FORMAT, "filters": ["outages"]}},
    "root": {"handlers": ["console"], "level": WAVE_LOG_LEVEL},
    "filters": {
        "expected_refusals": {"()": "wave_site.log_filters.ExpectedRefusalFilter"},
        "outages": {"()": "wave_site.log_filters.OutageFilter"},
    },
    # Quiet even at DEBUG: botocore logs request headers and credential responses (session tokens, keys), and
    # httpx every URL it fetches (layer URLs may carry credentials or signatures).
    "loggers": {
        **{
            name: {"level": "WARNING"}
            for name in ("django.db.backends", "botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore")
        },
        # With the database down the pool warns at each reconnection attempt, several lines each; the requests
        # that fail meanwhile log one line each (wave_site.errors) and /health says what is down.
        "psycopg.pool": {"level": "ERROR"},
        # A refusal, and a 501-504 the service answers on purpose, are answers, not errors: WARNING, not ERROR.
        "django.request": {"filters": ["expected_refusals"]},
    },
}
