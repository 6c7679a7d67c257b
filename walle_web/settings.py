"""Walle settings. Everything comes from the environment, with development defaults.

Embedded default (one laptop): SQLite, the in-process channel layer, content files on local
disk served by the app. Scale-out: DATABASE_URL=postgres://..., REDIS_URL=redis://...,
WALLE_CONTENT_BASE_URL pointing at a CDN in front of the content store.
"""

from __future__ import annotations

from pathlib import Path

from walle_web.env import database_from_url, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("WALLE_VAR_DIR", str(BASE_DIR / "var")))
# Local state of the embedded default (SQLite file, content store, release key) lives here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("WALLE_DEBUG", True)
SECRET_KEY = env_str("WALLE_SECRET_KEY", "dev-insecure-walle-secret-key-change-me-in-production")
ALLOWED_HOSTS = env_list("WALLE_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("WALLE_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "walle_web",
    "accounts",
    "tasks",
    "devices",
    "releases",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "walle_web.urls"
ASGI_APPLICATION = "walle_web.asgi.application"

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
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'walle.sqlite3'}")
# PostgreSQL: at most this many connections per process (0: no pool); see docs/operations.md.
DB_POOL_SIZE = env_int("WALLE_DB_POOL_SIZE", 8)
DATABASES = {"default": database_from_url(DATABASE_URL, str(BASE_DIR), DB_POOL_SIZE)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: in-process by default. With REDIS_URL, the pub/sub layer, so a release notice
# is one Redis PUBLISH that every daphne process receives once (never one message per device).
REDIS_URL = env_str("REDIS_URL", "")
REDIS_SOCKET_TIMEOUT = env_int("WALLE_REDIS_SOCKET_TIMEOUT", 0)  # 0 = block forever on reads
REDIS_POOL_SIZE = env_int("WALLE_REDIS_POOL_SIZE", 50)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # redis-py defaults would tear down an idle subscriber after 5 s;
                        # a doorbell subscriber is idle most of the time.
                        "socket_timeout": REDIS_SOCKET_TIMEOUT or None,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        "health_check_interval": 30,
                        "max_connections": REDIS_POOL_SIZE,
                    }
                ],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:home"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an unauthenticated API call gets 401 with WWW-Authenticate.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Walle API",
    "DESCRIPTION": "Tasks, versions, devices and releases of the Walle deployment platform.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets from the sidecar package: the docs page works with no internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Content store: content-addressed files. Served by the app at WALLE_CONTENT_BASE_URL unless
# that points at a CDN or static server in front of the same directory.
WALLE_CONTENT_DIR = Path(env_str("WALLE_CONTENT_DIR", str(VAR_DIR / "content")))
WALLE_CONTENT_BASE_URL = env_str("WALLE_CONTENT_BASE_URL", "/content/")
# Ed25519 release key that signs every manifest; generated on first use when missing.
WALLE_RELEASE_KEY_FILE = Path(env_str("WALLE_RELEASE_KEY_FILE", str(VAR_DIR / "release-key.pem")))

# Upload limits (bytes).
WALLE_MAX_FILE_BYTES = env_int("WALLE_MAX_FILE_BYTES", 64 * 1024 * 1024)
WALLE_MAX_VERSION_BYTES = env_int("WALLE_MAX_VERSION_BYTES", 256 * 1024 * 1024)
WALLE_MAX_VERSION_FILES = env_int("WALLE_MAX_VERSION_FILES", 200)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Where the embedded-mode rollout worker relays its notices (the server's own URL).
WALLE_RELAY_URL = env_str("WALLE_RELAY_URL", "")

# Device protocol limits.
WALLE_MAX_FRAME_BYTES = env_int("WALLE_MAX_FRAME_BYTES", 256 * 1024)
WALLE_HEARTBEAT_SECONDS = env_int("WALLE_HEARTBEAT_SECONDS", 30)

# The device ingest path (devices/ingest.py): one writer per process applies device messages
# in batches of at most WALLE_INGEST_BATCH, waiting WALLE_INGEST_WINDOW_MS for company; past
# WALLE_INGEST_QUEUE waiting messages a device is told to retry later.
WALLE_INGEST_QUEUE = env_int("WALLE_INGEST_QUEUE", 20000)
WALLE_INGEST_BATCH = env_int("WALLE_INGEST_BATCH", 500)
WALLE_INGEST_WINDOW_MS = env_int("WALLE_INGEST_WINDOW_MS", 5)
# A websocket handshake not authenticated within this many seconds is accepted and closed
# with 1013 (try again later); keep it well below daphne's --websocket_connect_timeout (run
# daphne with 30; its default 5 s answers 403, the status of a bad token).
WALLE_CONNECT_BUDGET_S = float(env_str("WALLE_CONNECT_BUDGET_S", "3"))
# Safety net for the per-process cache of each app's active releases (releases/desired.py),
# which every process drops on a release change anyway.
WALLE_RELEASE_CACHE_TTL = float(env_str("WALLE_RELEASE_CACHE_TTL", "5"))
# Files up to this size are inlined in the manifest document (at most the total per version).
WALLE_INLINE_MAX_BYTES = env_int("WALLE_INLINE_MAX_BYTES", 16 * 1024)
WALLE_INLINE_TOTAL_BYTES = env_int("WALLE_INLINE_TOTAL_BYTES", 64 * 1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("WALLE_LOG_LEVEL", "WARNING")},
}
