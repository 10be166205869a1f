"""Settings, read from environment variables only.

Every variable is parsed strictly: a bad value stops start-up with a message that names the
variable (``ImproperlyConfigured: AGENTOPS_LEASE_SECONDS: not a valid integer``). The defaults
give the embedded deployment (SQLite file, in-process broker, in-memory channel layer); setting
``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``CHANNEL_LAYER_URL`` gives the distributed one.
"""

from __future__ import annotations

import os
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from environs import Env, EnvError

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()


def _read(kind: str, name: str, default: Any, **kw: Any) -> Any:
    try:
        return getattr(env, kind)(name, default, **kw)
    except (EnvError, ValueError) as exc:
        reason = str(exc).split("invalid: ", 1)[-1]
        raise ImproperlyConfigured(f"{name}: {reason}") from None


def _positive(name: str, default: float, *, integer: bool = False) -> Any:
    value = _read("int" if integer else "float", name, default)
    if value <= 0:
        raise ImproperlyConfigured(f"{name}: must be greater than zero, got {value!r}")
    return value


DEBUG = _read("bool", "DJANGO_DEBUG", False)
_INSECURE_KEY = "agentops-embedded-insecure-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = _read("str", "DJANGO_SECRET_KEY", _INSECURE_KEY)
ALLOWED_HOSTS = _read("list", "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = _read("list", "DJANGO_CSRF_TRUSTED_ORIGINS", [])
AGENTOPS_APPS: list[str] = [a for a in _read("list", "AGENTOPS_APPS", []) if a]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "channels",
    "django_htmx",
    "csp",
    "axes",
    "template_partials",
    "ninja",  # the API docs page served from our static files, not a CDN
    "agentops",
    "runs",
    "approvals",
    "notifications",
    "anymail",
    *AGENTOPS_APPS,
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out sign-in into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "agentops.urls"
ASGI_APPLICATION = "agentops.asgi.application"
WSGI_APPLICATION = "agentops.wsgi.application"

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
            ],
            "libraries": {"paths": "agentops.paths"},
        },
    }
]

# --- database -----------------------------------------------------------------------------
DATA_DIR = Path(_read("path", "AGENTOPS_DATA_DIR", BASE_DIR / "var"))
_default_db = f"sqlite:///{DATA_DIR / 'agentops.sqlite3'}"
_db = _read("dj_db_url", "DATABASE_URL", _default_db)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] != ":memory:":
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so
    # two writers queue on the busy timeout instead of failing with "database is locked"
    # half-way through a transaction.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": (
            "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;PRAGMA busy_timeout=30000;"
        ),
    }
    _db["TEST"] = {"NAME": str(DATA_DIR / "test-agentops.sqlite3")}
elif _db["ENGINE"] in (
    "django.db.backends.postgresql",
    "django.db.backends.postgresql_psycopg2",
):
    _db["ENGINE"] = "django.db.backends.postgresql"
    _db["CONN_MAX_AGE"] = _read("int", "DATABASE_CONN_MAX_AGE", 60)
    _db["CONN_HEALTH_CHECKS"] = True
else:
    raise ImproperlyConfigured(
        f"DATABASE_URL: only sqlite:// and postgres:// are supported, got {_db['ENGINE']}"
    )
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_SQLITE = _db["ENGINE"] == "django.db.backends.sqlite3"

# --- celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = _read("str", "CELERY_BROKER_URL", "memory://")
if not CELERY_BROKER_URL.startswith(("memory://", "redis://", "rediss://", "amqp://")):
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL: expected memory://, redis:// or amqp://, got {CELERY_BROKER_URL!r}"
    )
EMBEDDED_BROKER = CELERY_BROKER_URL.startswith("memory://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    {"polling_interval": 0.02} if EMBEDDED_BROKER else {"visibility_timeout": 3600}
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "runs"
CELERY_TASK_ROUTES = {
    "runs.sweep_*": {"queue": "sweeps"},
    "approvals.sweep": {"queue": "sweeps"},
    "notifications.sweep": {"queue": "sweeps"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Celery closes Django's database connections around every task unless told otherwise; a run's
# doorbell would then pay a new PostgreSQL connection (3-5 ms) before its first step.
CELERY_DB_REUSE_MAX = _read("int", "CELERY_DB_REUSE_MAX", 500)

# --- channels -----------------------------------------------------------------------------
CHANNEL_LAYER_URL = _read("str", "CHANNEL_LAYER_URL", "memory://")
if CHANNEL_LAYER_URL.startswith("memory://"):
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
elif CHANNEL_LAYER_URL.startswith(("redis://", "rediss://")):
    # One daphne process holds many WebSockets: redis-py's pool (100 connections by default)
    # would refuse a crowd. No socket timeout: its 5 s default equals the 5 s channels_redis
    # blocks for a message (a waiting consumer on a busy loop timed out and was closed), and
    # any timeout makes redis-py write through ``asyncio.wait_for``, which on Python 3.11 can
    # swallow a cancellation (CPython gh-86296): a cancelled receive then polled Redis
    # forever. The read that waits, BZPOPMIN, has its own timeout; keepalive finds a peer
    # that vanished.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": CHANNEL_LAYER_URL,
                        "max_connections": 2000,
                        "socket_timeout": None,
                        "socket_keepalive": True,
                    }
                ]
            },
        }
    }
else:
    raise ImproperlyConfigured(
        f"CHANNEL_LAYER_URL: expected memory:// or redis://, got {CHANNEL_LAYER_URL!r}"
    )

# --- cache --------------------------------------------------------------------------------
# The API's rate-limit counters live here. Distributed, every web process must count in the
# same place (a Redis), or N processes would each allow the limit; embedded, one process
# counts in its own memory.
CACHE_URL = _read("str", "CACHE_URL", "locmem://")


def _cache(url: str) -> dict[str, Any]:
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "locmem":
        return {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": rest or "agentops",
        }
    if sep and scheme in ("redis", "rediss"):
        try:
            parts = urlsplit(url)
            valid = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            valid = False
        if valid:  # redis-py reads the rest (password, database number, TLS options)
            return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
        raise ImproperlyConfigured("CACHE_URL: not a valid redis:// URL (redis://host:port/db)")
    # The value may carry a password: name only its scheme.
    raise ImproperlyConfigured(
        f"CACHE_URL: expected locmem:// or redis://, got {(scheme + '://') if sep else 'no scheme'}"
    )


CACHES = {"default": _cache(CACHE_URL)}

# --- email --------------------------------------------------------------------------------
EMAIL_BACKEND = _read("str", "EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = str(DATA_DIR / "mail")
EMAIL_HOST = _read("str", "EMAIL_HOST", "localhost")
EMAIL_PORT = _read("int", "EMAIL_PORT", 25)
EMAIL_HOST_USER = _read("str", "EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _read("str", "EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _read("bool", "EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = _read("str", "DEFAULT_FROM_EMAIL", "agentops@localhost")
#: Where links in emails point: the console as its readers reach it.
#: (Checked as a URL, kept as text: environs gives a parsed URL for a value that is set.)
_base_url = _read("url", "AGENTOPS_BASE_URL", "http://127.0.0.1:8000", require_tld=False)
AGENTOPS_BASE_URL: str = _base_url if isinstance(_base_url, str) else _base_url.geturl()
#: Replies to approval emails go to <local>+<signed token>@<domain>; the domain's inbound mail
#: must reach an anymail inbound webhook or `manage.py receive_reply`.
AGENTOPS_REPLY_DOMAIN = _read(
    "str",
    "AGENTOPS_REPLY_DOMAIN",
    parseaddr(DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost",
)
AGENTOPS_REPLY_LOCAL = _read("str", "AGENTOPS_REPLY_LOCAL", "reply")
#: A reply address expires at its request's deadline, or after this many hours without one.
AGENTOPS_REPLY_MAX_AGE_HOURS = _positive("AGENTOPS_REPLY_MAX_AGE_HOURS", 24 * 14.0)
#: django-anymail's settings, from ANYMAIL_<NAME> variables (ANYMAIL_POSTMARK_SERVER_TOKEN,
#: ANYMAIL_WEBHOOK_SECRET, …): anymail validates them when the ESP is used.
ANYMAIL = {k.removeprefix("ANYMAIL_"): v for k, v in os.environ.items() if k.startswith("ANYMAIL_")}

# --- engine -------------------------------------------------------------------------------
#: How long a worker's lease on a run lasts without a heartbeat.
AGENTOPS_LEASE_SECONDS = _positive("AGENTOPS_LEASE_SECONDS", 30.0)
#: How long one task invocation drives a run before it re-queues it (fair sharing).
AGENTOPS_SLICE_SECONDS = _positive("AGENTOPS_SLICE_SECONDS", 20.0)
#: A queued or released run nobody picked up for this long gets its doorbell rung again.
#: Shorter in the embedded default, where a run started from another process (a management
#: command) rang a broker that lives in that other process.
AGENTOPS_ORPHAN_SECONDS = _positive(
    "AGENTOPS_ORPHAN_SECONDS", 5.0 if CELERY_BROKER_URL.startswith("memory://") else 30.0
)
#: Timers due within this many seconds also get a short Celery countdown (the row stays the
#: source of truth; the sweep is the backstop).
AGENTOPS_SHORT_TIMER_SECONDS = _positive("AGENTOPS_SHORT_TIMER_SECONDS", 60.0)
#: Worker threads of the embedded deployment.
AGENTOPS_EMBEDDED_WORKERS = _positive("AGENTOPS_EMBEDDED_WORKERS", 4, integer=True)
#: Interval of the beat sweeps written by the migration (seconds); admins tune them in admin.
AGENTOPS_SWEEP_SECONDS = _positive("AGENTOPS_SWEEP_SECONDS", 5, integer=True)

#: Threads of a web process that run the (synchronous) middleware and views, each keeping
#: its database connection; the event loop holds the sockets. At most this many requests of
#: a process are in Django at once (a slow one holds a thread, not the process). Two keep a
#: query's wait overlapped with another request's Python; more only queue for the one
#: interpreter lock, and a thread back from the database waits behind every other.
AGENTOPS_WEB_THREADS = _positive("AGENTOPS_WEB_THREADS", 2, integer=True)

#: Serve /static/ from the ASGI process (the embedded default); turn off behind a proxy/CDN.
AGENTOPS_SERVE_STATIC = _read("bool", "AGENTOPS_SERVE_STATIC", True)

#: Bearer token a Prometheus scraper sends to /metrics; empty: only staff sign-ins may read it.
AGENTOPS_METRICS_TOKEN = _read("str", "AGENTOPS_METRICS_TOKEN", "")

# --- HTTP API -----------------------------------------------------------------------------
#: Requests per minute per API token (or signed-in user); more are answered 429.
AGENTOPS_API_RATE_PER_MINUTE = _positive("AGENTOPS_API_RATE_PER_MINUTE", 600, integer=True)
#: Let run callbacks go to loopback and private addresses (link-local/metadata: never).
AGENTOPS_ALLOW_PRIVATE_CALLBACKS = _read("bool", "AGENTOPS_ALLOW_PRIVATE_CALLBACKS", False)
#: Attempts to deliver one run callback before it is given up (an admin can redeliver it).
AGENTOPS_CALLBACK_MAX_ATTEMPTS = _positive("AGENTOPS_CALLBACK_MAX_ATTEMPTS", 15, integer=True)
#: A keep-alive comment on an idle event stream this often (seconds).
AGENTOPS_SSE_HEARTBEAT_SECONDS = _positive("AGENTOPS_SSE_HEARTBEAT_SECONDS", 15.0)
#: How often an event stream looks for new events in the database (seconds).
AGENTOPS_SSE_POLL_SECONDS = _positive("AGENTOPS_SSE_POLL_SECONDS", 0.5)

# --- notifications --------------------------------------------------------------------------
#: Tries of one message before it fails and goes on by the person's next channel.
AGENTOPS_NOTIFY_MAX_ATTEMPTS = _positive("AGENTOPS_NOTIFY_MAX_ATTEMPTS", 8, integer=True)
#: A webhook endpoint failing this many deliveries in a row is disabled (its owner is told).
AGENTOPS_WEBHOOK_DISABLE_AFTER = _positive("AGENTOPS_WEBHOOK_DISABLE_AFTER", 10, integer=True)
#: Someone who closed a run's page is emailed about it only if not back within this (seconds).
AGENTOPS_PRESENCE_GRACE_SECONDS = _positive("AGENTOPS_PRESENCE_GRACE_SECONDS", 180, integer=True)
#: An approval request unread in the app for this long also goes by email (seconds).
AGENTOPS_APPROVAL_UNREAD_SECONDS = _positive("AGENTOPS_APPROVAL_UNREAD_SECONDS", 900, integer=True)

# --- the rest -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/runs/"
LOGOUT_REDIRECT_URL = "/login/"

# --- sign-in and browser security ---------------------------------------------------------
# django-axes checks every sign-in (the web login and admin's): after AXES_FAILURE_LIMIT
# failures for one username from one address, that pair is locked out for the cool-off.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Django's ModelBackend, with the per-request read of the user written as SQL.
    "agentops.auth.ModelBackend",
    # Team roles as object permissions: user.has_perm("runs.operate_run", run).
    "runs.permissions.TeamRoleBackend",
]
AXES_FAILURE_LIMIT = _positive("AXES_FAILURE_LIMIT", 5, integer=True)
AXES_COOLOFF_TIME = timedelta(minutes=_positive("AXES_COOLOFF_MINUTES", 15, integer=True))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
#: Served over HTTPS (the console's address says so, or it is set), the session and CSRF
#: cookies are never sent over plain HTTP.
SECURE_COOKIES = _read(
    "bool", "DJANGO_SECURE_COOKIES", AGENTOPS_BASE_URL.lower().startswith("https://")
)
# Behind a proxy that ends TLS, Django sees plain HTTP; trust the proxy's X-Forwarded-Proto
# only when told to (a client could send the header itself to a server without such proxy).
if _read("bool", "DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Django's database sessions, read by SQL written once (``agentops.sessions``).
SESSION_ENGINE = "agentops.sessions"
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
# No inline script or style anywhere: every script is a static file of our own.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _read("str", "AGENTOPS_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
