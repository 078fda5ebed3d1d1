"""Settings of the textbook baseline: what `django-admin startproject` plus DRF and simplejwt
give, with the service's database server, pool and secrets so that only the code differs.

The database is `bench_baseline` on the server the service uses (walletsite.config: the
embedded PostgreSQL under DATA_DIR, or DATABASE_URL's host), reached with the same psycopg
pool settings as the service's (walletsite/settings.py).
"""

from datetime import timedelta

from walletsite import config as _config

CONFIG = _config.load()
BASE_DIR = _config.BASE_DIR

SECRET_KEY = CONFIG.secret_key
DEBUG = False
ALLOWED_HOSTS = list(CONFIG.allowed_hosts)

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "bench.baseline",
]

# An API-only project: no sessions, CSRF, messages or admin.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "bench.baseline.urls"
APPEND_SLASH = False

DATABASE_NAME = "bench_baseline"
_db = CONFIG.database
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": _db.user,
        "PASSWORD": _db.password,
        "HOST": _db.host,
        "PORT": _db.port,
        "ATOMIC_REQUESTS": False,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "pool": {"min_size": 1, "max_size": CONFIG.web_threads + 4, "timeout": 10},
            "connect_timeout": 5,
            "application_name": "bench-baseline",
        },
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    # simplejwt's default: every request loads its user with one query.
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The contract's problem+json errors, rendered by the service's own handler.
    "EXCEPTION_HANDLER": "walletsite.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": CONFIG.jwt_signing_key,
    "ACCESS_TOKEN_LIFETIME": timedelta(days=1),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
}

BASELINE = {
    "CURRENCY": CONFIG.currency,
    "MAX_TRANSACTION_AMOUNT": CONFIG.max_transaction_amount,
    "PIN_PEPPER": CONFIG.pin_pepper,
    "PIN_MAX_FAILURES": CONFIG.pin_max_failures,
    "PIN_LOCK_SECONDS": CONFIG.pin_lock_seconds,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
