"""Request id, request metrics, the body-size limit and the Content-Security-Policy, for
every request; sessions, the logged-in user and messages for every request but the API's."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware

from walletsite import metrics
from walletsite.errors import _django_problem
from walletsite.logs import request_id

logger = logging.getLogger("walletsite.request")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Takes the caller's X-Request-Id when it is well-formed, else makes one; every log
    line of the request carries it and the response echoes it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        request.request_id = rid
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = rid
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response
        finally:
            request_id.reset(token)


class MetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_DURATION.labels(request.method, route).observe(time.perf_counter() - started)
        return response


class BodyLimitMiddleware:
    """Refuses a body over BODY_LIMIT_BYTES by its Content-Length before reading it (413).
    A body without a length is still capped by DATA_UPLOAD_MAX_MEMORY_SIZE when read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            return _django_problem("validation_failed", detail="Content-Length is not a number")
        if int(length) > settings.BODY_LIMIT_BYTES:
            return _django_problem("payload_too_large")
        return self.get_response(request)


# Pages (the admin, the API reference, the sandbox checkout) run only scripts served from
# here, never inline ones or any other origin's; inline styles are allowed because the admin
# and Swagger UI set them. Swagger UI's init script comes from /api/docs?script
# (SpectacularSwaggerSplitView) for that reason. Nothing may frame a page.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Everything else (JSON, CSV, metrics, assets) is data: opened as a document it may load
# and run nothing.
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"


class ContentSecurityPolicyMiddleware:
    """Sets Content-Security-Policy on every response that has none: PAGE_POLICY for HTML,
    DATA_POLICY for the rest. (Django 5.2 has no CSP support of its own.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            html = response.get("Content-Type", "").startswith("text/html")
            response["Content-Security-Policy"] = PAGE_POLICY if html else DATA_POLICY
        return response


API_PREFIX = "/api/"


class _NotForTheApi:
    """Django's session, authentication and message middleware serve the browser pages (the
    admin, the sandbox's pages); the API authenticates bearer tokens in DRF and is CSRF-exempt,
    so for its requests they would only cost time. They also leave the request in reference
    cycles (the message storage and `request.auser` both point back at it), and the cyclic
    garbage of every request then waits for the garbage collector, which frees a few hundred
    requests' worth at once while the process's other threads wait: the tail of the API's
    latency. API requests therefore go straight past them."""

    def __call__(self, request):
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_NotForTheApi, sessions_middleware.SessionMiddleware):
    pass


class AuthenticationMiddleware(_NotForTheApi, auth_middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(_NotForTheApi, messages_middleware.MessageMiddleware):
    pass
