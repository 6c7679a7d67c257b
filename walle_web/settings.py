"""Walle settings. Everything comes from the environment, with development defaults.

Embedded default (one laptop): SQLite, the in-process channel layer, content files on local
disk served by the app. Scale-out: DATABASE_URL=postgres://..., REDIS_URL=redis://...,
WALLE_CONTENT_BASE_URL pointing at a CDN in front of the content store.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from walle_web.env import database_from_url, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("WALLE_VAR_DIR", str(BASE_DIR / "var")))
# Local state of the embedded default (SQLite file, content store, release key) lives here.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Off unless a development command turns it on (`make run`, the test settings): a debug page
# shows settings and tracebacks to whoever triggers an error.
DEBUG = env_bool("WALLE_DEBUG", False)
DEV_SECRET_KEY = "dev-insecure-walle-secret-key-change-me-in-production"
SECRET_KEY = env_str("WALLE_SECRET_KEY", "")
if not SECRET_KEY or SECRET_KEY.startswith("dev-insecure-"):
    if not DEBUG:
        # The development key is public: with it anyone can forge sessions and signatures.
        raise ImproperlyConfigured(
            "WALLE_SECRET_KEY is not set (or is the public development key) and WALLE_DEBUG is "
            "off. Set WALLE_SECRET_KEY to a long random value, e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'`, or WALLE_DEBUG=1 on a development machine."
        )
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
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
    "django_filters",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "walle_web",
    "accounts",
    "tasks",
    "devices",
    "releases",
    "alerts",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "walle_web.middleware.RefuseUnstorableInput",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a username/address pair with too many recent failures (django-axes).
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "walle_web.urls"
ASGI_APPLICATION = "walle_web.asgi.application"

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
                "django.template.context_processors.csp",
                "console.context.console",
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

# Throttle counters live in the cache: per process by default, shared through Redis when there
# are several processes (so a limit holds across the load balancer).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "walle_web.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("WALLE_CACHE_PREFIX", "walle"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:home"

# Throttle rates ("N/s", "N/min", "N/hour", "N/day"); empty disables one.
WALLE_THROTTLE_RATES = {
    # API calls of one user or token.
    "user": env_str("WALLE_THROTTLE_USER", "3000/min"),
    # Anonymous API calls per address (the schema, the docs).
    "anon": env_str("WALLE_THROTTLE_ANON", "600/min"),
    # Wrong API or device tokens per address; past it even a right one waits.
    "auth_failure": env_str("WALLE_THROTTLE_AUTH_FAILURES", "30/min"),
    # Enrollments per address and per enrollment key (a fleet enrolls over days, not seconds;
    # raise these for a load test that enrolls a simulated fleet from one machine).
    "enroll_address": env_str("WALLE_THROTTLE_ENROLL_ADDRESS", "120/min"),
    "enroll_key": env_str("WALLE_THROTTLE_ENROLL_KEY", "600/min"),
    # Device HTTP calls (the tunnel batch) per device.
    "device": env_str("WALLE_THROTTLE_DEVICE", "120/min"),
}
# Proxies in front of daphne that append to X-Forwarded-For (throttles use the client address).
WALLE_NUM_PROXIES = env_int("WALLE_NUM_PROXIES", 0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an unauthenticated API call gets 401 with WWW-Authenticate.
        "walle_web.rest.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "walle_web.rest.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["walle_web.rest.UserThrottle", "walle_web.rest.AnonThrottle"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "walle_web.rest.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "walle_web.rest.Pagination",
    "PAGE_SIZE": 100,
    "NUM_PROXIES": WALLE_NUM_PROXIES or None,
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
    "ENUM_NAME_OVERRIDES": {
        "ReleaseStateEnum": "releases.choices.ReleaseState",
        "DeploymentStateEnum": "releases.choices.DeploymentState",
        "AlertEventEnum": "alerts.choices.AlertEvent",
    },
    # Every operation lists the error statuses it can answer (walle_web/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "walle_web.schema.document_error_responses",
    ],
}

# Login lockout (django-axes): after this many failures for one username from one address,
# that pair is locked out for the cool-off time, right password or not.
AXES_FAILURE_LIMIT = env_int("WALLE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("WALLE_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "console.views.auth.locked_out"
AXES_VERBOSE = False

# Content store: content-addressed files. Served by the app at WALLE_CONTENT_BASE_URL unless
# that points at a CDN or static server in front of the same directory.
WALLE_CONTENT_DIR = Path(env_str("WALLE_CONTENT_DIR", str(VAR_DIR / "content")))
WALLE_CONTENT_BASE_URL = env_str("WALLE_CONTENT_BASE_URL", "/content/")
# Ed25519 release key that signs every manifest; generated on first use when missing.
WALLE_RELEASE_KEY_FILE = Path(env_str("WALLE_RELEASE_KEY_FILE", str(VAR_DIR / "release-key.pem")))

# Upload limits (bytes). Enforced while the upload streams to disk (tasks/uploads.py), and
# again on what model conversion produced.
WALLE_MAX_FILE_BYTES = env_int("WALLE_MAX_FILE_BYTES", 64 * 1024 * 1024)
WALLE_MAX_VERSION_BYTES = env_int("WALLE_MAX_VERSION_BYTES", 256 * 1024 * 1024)
WALLE_MAX_VERSION_FILES = env_int("WALLE_MAX_VERSION_FILES", 200)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# Uploaded files always stream to a temporary file with their limit (tasks/uploads.py); this
# is only how much of a raw request body Django keeps in memory before spooling it to disk.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_HANDLERS = ["tasks.uploads.LimitedUploadHandler"]
DATA_UPLOAD_MAX_NUMBER_FILES = WALLE_MAX_VERSION_FILES + 1
# JSON request bodies (the tunnel batch is the largest).
WALLE_MAX_JSON_BODY_BYTES = env_int("WALLE_MAX_JSON_BODY_BYTES", 4 * 1024 * 1024)
# The worker process that checks an upload and converts its models (tasks/isolation.py).
WALLE_UPLOAD_CHECK_SECONDS = env_int("WALLE_UPLOAD_CHECK_SECONDS", 120)
WALLE_UPLOAD_CHECK_MEMORY_MB = env_int("WALLE_UPLOAD_CHECK_MEMORY_MB", 2048)
WALLE_UPLOAD_CHECK_WORKERS = env_int("WALLE_UPLOAD_CHECK_WORKERS", 2)

# Does the server process (walle_web.serve) run the rollout loop itself? In the embedded
# configuration it must: the in-process channel layer reaches only the sockets of the process
# that publishes. With Redis, `manage.py rolloutd` runs on its own by default; set this to 1 to
# run the loop in every server process instead (safe: each step locks its release's row).
WALLE_ROLLOUT_IN_SERVER = env_bool("WALLE_ROLLOUT_IN_SERVER", not REDIS_URL)
WALLE_ROLLOUT_INTERVAL = float(env_str("WALLE_ROLLOUT_INTERVAL", "2"))

# Device protocol limits.
WALLE_MAX_FRAME_BYTES = env_int("WALLE_MAX_FRAME_BYTES", 256 * 1024)
WALLE_HEARTBEAT_SECONDS = env_int("WALLE_HEARTBEAT_SECONDS", 30)
WALLE_MAX_SOCKETS_PER_DEVICE = env_int("WALLE_MAX_SOCKETS_PER_DEVICE", 2)
WALLE_DEVICE_FRAMES_PER_SECOND = float(env_str("WALLE_DEVICE_FRAMES_PER_SECOND", "20"))
WALLE_DEVICE_FRAME_BURST = env_int("WALLE_DEVICE_FRAME_BURST", 200)

# /metrics answers callers that send `Authorization: Bearer <WALLE_METRICS_TOKEN>` (and
# superusers); without the token it shows nothing, its figures span every app.
WALLE_METRICS_TOKEN = env_str("WALLE_METRICS_TOKEN", "")

# HTTPS. Production serves the console and API over TLS (directly or behind a proxy that
# sets X-Forwarded-Proto); WALLE_HTTPS=1 turns on redirects, HSTS and secure cookies, which
# `manage.py check --deploy` asks for (docs/operations.md).
WALLE_HTTPS = env_bool("WALLE_HTTPS", False)
if env_bool("WALLE_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = WALLE_HTTPS
# Load balancers probe /healthz over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("WALLE_HSTS_SECONDS", 31_536_000) if WALLE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = WALLE_HTTPS and env_bool("WALLE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = WALLE_HTTPS and env_bool("WALLE_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = WALLE_HTTPS
CSRF_COOKIE_SECURE = WALLE_HTTPS
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (Django's own middleware): scripts and styles only from this site,
# no inline scripts; style attributes stay allowed (the console sets bar widths with them).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "style-src-attr": [CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# The device ingest path (devices/ingest.py): one writer per process applies device messages
# in batches of at most WALLE_INGEST_BATCH, waiting WALLE_INGEST_WINDOW_MS for company; past
# WALLE_INGEST_QUEUE waiting messages a device is told to retry later.
WALLE_INGEST_QUEUE = env_int("WALLE_INGEST_QUEUE", 20000)
WALLE_INGEST_BATCH = env_int("WALLE_INGEST_BATCH", 500)
WALLE_INGEST_WINDOW_MS = env_int("WALLE_INGEST_WINDOW_MS", 5)
# A websocket handshake not authenticated within this many seconds is accepted and closed
# with 1013 (try again later); keep it below daphne's --websocket_connect_timeout (run
# daphne with 30; its default 5 s answers 403, the status of a bad token).
WALLE_CONNECT_BUDGET_S = float(env_str("WALLE_CONNECT_BUDGET_S", "15"))
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
    # The rollout loop's steps (a stage advanced, a release completed): few, and what an
    # operator watching the server's output looks for.
    "loggers": {"releases.worker": {"level": "INFO"}},
}

# Alerts (alerts/): links in alerts point at the console here; email goes through Django's
# mailer: files under var/mail on a development machine (DEBUG), SMTP with the WALLE_EMAIL_*
# settings otherwise, so a production server never silently writes its alerts to disk.
WALLE_PUBLIC_URL = env_str("WALLE_PUBLIC_URL", "http://127.0.0.1:8000")
EMAIL_BACKEND_PATH = env_str(
    "WALLE_EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
MAILERS = {
    "default": {
        "BACKEND": EMAIL_BACKEND_PATH,
        "OPTIONS": (
            {"file_path": str(VAR_DIR / "mail")}
            if EMAIL_BACKEND_PATH.endswith("filebased.EmailBackend")
            else {
                "host": env_str("WALLE_EMAIL_HOST", "localhost"),
                "port": env_int("WALLE_EMAIL_PORT", 25),
                "username": env_str("WALLE_EMAIL_USER", ""),
                "password": env_str("WALLE_EMAIL_PASSWORD", ""),
                "use_tls": env_bool("WALLE_EMAIL_TLS", False),
            }
            if EMAIL_BACKEND_PATH.endswith("smtp.EmailBackend")
            else {}
        ),
    }
}
DEFAULT_FROM_EMAIL = env_str("WALLE_EMAIL_FROM", "walle@localhost")
# Webhooks to private or loopback addresses: allowed by default (one laptop, receivers on
# localhost); turn off where alert configurers must not reach the internal network.
WALLE_ALERT_PRIVATE_WEBHOOKS = env_bool("WALLE_ALERT_PRIVATE_WEBHOOKS", True)
