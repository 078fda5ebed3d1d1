"""An API request leaves no cyclic garbage behind.

Objects in reference cycles outlive their request until the garbage collector finds them, and
it frees them by the hundred in one go, holding every thread of the worker meanwhile: that
was most of the API's tail latency (README "Benchmark"). Every request is sent here the way
gunicorn sends it, through the WSGI handler with a real environ (Django's test client would
add cycles of its own), and then the collector, told to keep what it finds, must find
nothing. A new cycle on these paths (a middleware, DRF, a model cache) fails here with the
types it is made of.

The routes held to it are the ones the benchmark's latency targets are about: the transfer
(posted, refused, wrong PIN), the history page, and a refusal before any view code. Routes
that render through DRF serializers leave cycles by DRF's design (every bound field points
back at its serializer); the collector frees those, and after gunicorn_conf's gc.freeze a
full collection no longer walks the whole process to do it.
"""

from __future__ import annotations

import gc
import io
import json
import uuid
from collections import Counter

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections

from wallets.tests.factories import DEFAULT_PIN, auth_header, register_user
from wallets.tests.money import fund

pytestmark = pytest.mark.django_db


def _environ(method: str, path: str, headers: dict[str, str], body: bytes) -> dict:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "testserver",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **headers,
    }


def _call(handler: WSGIHandler, method: str, path: str, headers: dict, body: dict | None) -> int:
    """The answer's status; the body is read and the response closed, as gunicorn does."""
    status = []
    raw = json.dumps(body).encode() if body is not None else b""
    result = handler(_environ(method, path, headers, raw), lambda s, h, exc_info=None: status.append(s))
    try:
        b"".join(result)
    finally:
        result.close()
    return int(status[0].split()[0])


def _garbage_of(run) -> Counter:
    """The types of the objects that only the cycle collector could free after `run`."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.fixture
def handler():
    """Django's handler as gunicorn calls it, but keeping the test's connection (and its
    transaction) across requests, as Django's test client does."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def parties():
    sender, wallet = register_user(name="Sender")
    fund(wallet, 10_000)
    _, recipient = register_user(name="Recipient")
    return auth_header(sender), recipient


# name: (method, path, body given the recipient, the PIN, the status); every transfer
# carries a fresh Idempotency-Key.
REQUESTS = {
    "transfer": ("POST", "/api/v1/wallet/transfer", 100, DEFAULT_PIN, 201),
    "refused transfer": ("POST", "/api/v1/wallet/transfer", 10**7, DEFAULT_PIN, 422),
    "wrong PIN": ("POST", "/api/v1/wallet/transfer", 100, "9999", 403),
    "history page": ("GET", "/api/v1/wallet/transactions", None, None, 200),
    "no token": ("GET", "/api/v1/wallet/balance", None, None, 401),
}


def _send(handler: WSGIHandler, name: str, auth: dict, recipient) -> int:
    method, path, amount, pin, _ = REQUESTS[name]
    headers = {} if name == "no token" else dict(auth)
    body = None
    if method == "POST":
        headers["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex
        body = {"to": recipient.handle, "amount": amount, "pin": pin}
    return _call(handler, method, path, headers, body)


@pytest.mark.parametrize("name", REQUESTS)
def test_an_api_request_leaves_no_cyclic_garbage(handler, parties, name):
    # given: a handler that has served this kind of request once (imports, caches)
    auth, recipient = parties
    expected = REQUESTS[name][-1]
    assert _send(handler, name, auth, recipient) == expected
    statuses = []
    # when
    garbage = _garbage_of(lambda: statuses.append(_send(handler, name, auth, recipient)))
    # then
    assert statuses == [expected]
    assert garbage == Counter(), f"{name} left cyclic garbage: {garbage.most_common(12)}"
