"""Django settings. Every value that varies by deployment comes from `walletsite.config`,
read once here; see the README's configuration table."""

from datetime import timedelta

from walletsite import config as _config

try:
    CONFIG = _config.load()
except _config.ConfigError as exc:
    # A clear one-line message instead of a traceback from deep inside Django.
    raise SystemExit(f"configuration error: {exc}") from None

BASE_DIR = _config.BASE_DIR
PRODUCTION = CONFIG.env == "production"
TESTING = CONFIG.env == "test"

SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = list(CONFIG.allowed_hosts)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ledger",
    "accounts",
    "wallets",
]

MIDDLEWARE = [
    "walletsite.middleware.RequestIdMiddleware",
    "walletsite.middleware.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "walletsite.middleware.BodyLimitMiddleware",
    "walletsite.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "walletsite.middleware.AuthenticationMiddleware",
    "walletsite.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "walletsite.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "walletsite.urls"
WSGI_APPLICATION = "walletsite.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "walletsite" / "templates"],
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

_db = CONFIG.database
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.name,
        "USER": _db.user,
        "PASSWORD": _db.password,
        "HOST": _db.host,
        "PORT": _db.port,
        # A money service owns its transactions (transaction.atomic(durable=True) in the
        # services); a request-wide transaction would roll back a stored idempotent failure
        # and hold row locks while the response renders.
        "ATOMIC_REQUESTS": False,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            # One psycopg pool per process, shared by its gthread threads. A connection
            # goes back to the pool at the end of each request.
            "pool": {
                "min_size": 1,
                "max_size": CONFIG.web_threads + 4,
                "timeout": CONFIG.database_pool_timeout_seconds,
            },
            "connect_timeout": 5,
            "application_name": "wallet",
            # Prepared statements run on their generic plans (walletsite.db).
            "options": "-c plan_cache_mode=force_generic_plan",
        },
        "TEST": {"NAME": "test_wallet"},
    }
}

AUTH_USER_MODEL = "accounts.User"
# User.email is unique case-insensitively (a UniqueConstraint on Lower("email")), which
# Django's check cannot see; the login backend looks emails up with iexact.
SILENCED_SYSTEM_CHECKS = ["auth.W004"]
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.BCryptSHA256PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = CONFIG.data_dir / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Request bodies above this are refused with 413 payload_too_large.
DATA_UPLOAD_MAX_MEMORY_SIZE = CONFIG.body_limit_bytes
BODY_LIMIT_BYTES = CONFIG.body_limit_bytes

if CONFIG.redis_url:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": CONFIG.redis_url,
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
                # The cache never decides anything about money: if Redis is down, carry on.
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.AccessTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "walletsite.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Empty when RATE_LIMITS=off, which turns every throttle off (walletsite.throttles).
    "DEFAULT_THROTTLE_RATES": CONFIG.rate_limits or {},
}
# The reverse proxies whose X-Forwarded-For the throttles believe (walletsite.throttles.client_ip).
TRUSTED_PROXIES = CONFIG.trusted_proxies

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=CONFIG.access_token_seconds),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=CONFIG.refresh_token_seconds),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": CONFIG.jwt_signing_key,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "sub",
    "LEEWAY": 0,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Wallet API",
    "DESCRIPTION": "Wallets, a double-entry ledger, P2P transfers and money in through a gateway.",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Operations are tagged by the first path segment after /api/v1: auth, wallet, ...
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Several models have a `status`; each choice set gets its own component name.
    "ENUM_NAME_OVERRIDES": {
        "WalletStatusEnum": "wallets.models.Wallet.Status",
        "PaymentStatusEnum": "wallets.models.PaymentAttempt.Status",
        "HistoryStatusEnum": "wallets.history.HISTORY_STATUSES",
        "CampaignStatusEnum": "wallets.models.CashbackCampaign.Status",
        "WithdrawalStatusEnum": "wallets.withdrawals.PUBLIC_STATUSES",
        "SandboxPayoutStatusEnum": "wallets.models.SandboxPayout.Status",
    },
}

# The money rules that are settings, not code.
WALLET = {
    "CURRENCY": CONFIG.currency,
    "MAX_TRANSACTION_AMOUNT": CONFIG.max_transaction_amount,
    "PIN_PEPPER": CONFIG.pin_pepper,
    "PIN_MAX_FAILURES": CONFIG.pin_max_failures,
    "PIN_LOCK_SECONDS": CONFIG.pin_lock_seconds,
    "GATEWAY_WEBHOOK_SECRET": CONFIG.gateway_webhook_secret,
    "BANK_WEBHOOK_SECRET": CONFIG.bank_webhook_secret,
    "WEBHOOK_TOLERANCE_SECONDS": CONFIG.webhook_tolerance_seconds,
    "GATEWAY_SANDBOX": CONFIG.gateway_sandbox,
    "PUBLIC_URL": CONFIG.public_url,
    "PAYMENT_ATTEMPT_TTL_SECONDS": CONFIG.payment_attempt_ttl_seconds,
    "IDEMPOTENCY_RETENTION_HOURS": CONFIG.idempotency_retention_hours,
    "MERCHANT_FEE_BPS": CONFIG.merchant_fee_bps,
    "BANK_URL": CONFIG.bank_url,
    "SANDBOX_BANK_MODE": CONFIG.sandbox_bank_mode,
    "BANK_TIMEOUT_SECONDS": CONFIG.bank_timeout_seconds,
    "BANK_BREAKER_FAILURES": CONFIG.bank_breaker_failures,
    "BANK_BREAKER_COOLDOWN_SECONDS": CONFIG.bank_breaker_cooldown_seconds,
    "WITHDRAWAL_RECHECK_SECONDS": CONFIG.withdrawal_recheck_seconds,
    "WITHDRAWAL_TIMEOUT_SECONDS": CONFIG.withdrawal_timeout_seconds,
    "WEBHOOK_MAX_ATTEMPTS": CONFIG.webhook_max_attempts,
    "WEBHOOK_TIMEOUT_SECONDS": CONFIG.webhook_timeout_seconds,
    "GROUP_COMMIT": CONFIG.group_commit,
}

# Users' notification emails (wallets.notifications). Development prints them on the
# worker's console; production sends through SMTP (Django's EMAIL_HOST / EMAIL_PORT, default
# localhost:25, a local relay). Tests get Django's in-memory backend from the test runner.
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if PRODUCTION else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = CONFIG.default_from_email
# An unreachable mail server must not hold the worker (and the event) for minutes.
EMAIL_TIMEOUT = 10

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "walletsite.logs.RequestIdFilter"}},
    "formatters": {"json": {"()": "walletsite.logs.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": CONFIG.log_level},
    "loggers": {
        # Django logs every 4xx as a warning with the request; we log requests ourselves.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
    },
}

# Security: on in production, where TLS ends at a proxy that sets X-Forwarded-Proto.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Health checks and scrapes come over plain HTTP from inside the deployment.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    CSRF_TRUSTED_ORIGINS = [CONFIG.public_url] if CONFIG.public_url.startswith("https://") else []
