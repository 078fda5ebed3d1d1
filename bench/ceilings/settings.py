"""The service's settings (database, apps, JWT, secrets) with no middleware and the ceiling
routes only: what the framework costs before any of the service's own code."""

from walletsite.settings import *  # noqa: F403

MIDDLEWARE = []
ROOT_URLCONF = "bench.ceilings.urls"
