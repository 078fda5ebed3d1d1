"""Operations endpoints outside /api/v1: liveness, readiness, Prometheus metrics, the API
reference and the static files the admin and the reference need.

None of them needs authentication: load balancers, orchestrators and Prometheus call them
without credentials. They render with Django's plain responses, not DRF, so that a broken
authentication or renderer setting cannot make a healthy process look dead.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from django.contrib.staticfiles.views import serve as staticfiles_serve
from django.db import DEFAULT_DB_ALIAS, Error, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny

from walletsite import metrics
from walletsite.errors import _django_problem

logger = logging.getLogger("walletsite.ops")

# /readyz answers 503 when the database does not answer `SELECT 1` within this long, so an
# orchestrator takes the instance out of rotation instead of sending it requests that would
# wait for the pool's own 10 s timeout.
READINESS_TIMEOUT_SECONDS = 2.0

# The admin's and Swagger UI's assets change only with a new release of a package.
STATIC_MAX_AGE_SECONDS = 3600


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answers HTTP. Touches nothing else, the database included, so a
    database outage does not get every web process restarted."""
    return JsonResponse({"status": "ok"})


def database_ready(alias: str = DEFAULT_DB_ALIAS, timeout: float = READINESS_TIMEOUT_SECONDS) -> str | None:
    """None when the database answers `SELECT 1` within `timeout` seconds, else why not.

    With a connection pool (production settings) the check borrows a connection with the
    timeout, the same way a request gets one, so it sees exactly what requests would see: a
    server that is down, a pool that is exhausted, a server too slow to answer.
    """
    wrapper = connections[alias]
    pool = wrapper.pool
    started = time.monotonic()
    try:
        if pool is not None:
            pool.open(wait=False)
            with pool.connection(timeout=timeout) as conn, conn.transaction():
                # LOCAL: the setting ends with this transaction, so the pooled connection
                # goes back with the server's default statement timeout.
                left_ms = max(int((timeout - (time.monotonic() - started)) * 1000), 100)
                conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(left_ms)])
                conn.execute("SELECT 1")
        else:
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
    # Django's wrapped errors on the plain path; psycopg's own (PoolTimeout included) when
    # the pool is used directly.
    except (Error, psycopg.Error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@require_safe
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready to serve: the process is up and the database answers within ~2 s."""
    problem = database_ready()
    if problem is not None:
        logger.warning("not ready: database unavailable", extra={"reason": problem})
        response = _django_problem("service_unavailable", detail="The database is not reachable")
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ready"})


@require_safe
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


class SchemaView(SpectacularAPIView):
    """GET /api/schema: the OpenAPI document, without authentication (a stale bearer token in
    a browser must not turn the reference into a 401).

    One generation at a time per process: drf-spectacular loads its extension classes lazily
    and not thread-safely, so the first concurrent requests of a fresh gthread worker failed
    with 500 (4 of 16 at once under `make run`: AttributeError in plumbing._load_class).
    Generating takes about 20 ms, and the document is read by people and tools, not on a hot path.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    _generation = threading.Lock()

    def _get_schema_response(self, request):
        with self._generation:
            return super()._get_schema_response(request)


@require_safe
def static(request: HttpRequest, path: str) -> HttpResponse:
    """The admin's and Swagger UI's assets, straight from the installed apps' static
    directories (Django's staticfiles finders), so `make run` needs neither DEBUG nor a
    collectstatic step nor a separate web server. At this service's scale (a few staff users
    and developers reading the API reference) that is plenty; a deployment that wants a CDN
    runs collectstatic and serves STATIC_ROOT in front of gunicorn instead."""
    # insecure=True: serve even when DEBUG is off. The finders only look inside the apps'
    # static directories and refuse paths that climb out of them.
    response = staticfiles_serve(request, path, insecure=True)
    response["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE_SECONDS}"
    return response
