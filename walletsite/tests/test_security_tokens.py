"""Forged, expired and revoked tokens against every authenticated API route, and against
POST /auth/refresh.

accounts/tests/test_auth_api.py checks each kind of bad token on GET /me with its exact
problem body; this file makes sure no route is left out (the list comes from the URL
resolver) and adds the forgeries that file lacks: an RS256 header over an HMAC signature
(algorithm confusion), a token without `exp`, a correctly signed token whose `sub` and `fam`
belong to different users or to no login, and the same forgeries presented as refresh tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from django.conf import settings

from accounts.models import TokenFamily
from accounts.tokens import session_login, session_logout, session_refresh
from wallets.tests.factories import DEFAULT_PASSWORD, register_user
from walletsite.errors import InvalidRefreshToken
from walletsite.tests.security import db_snapshot, snapshot_diff, url_routes

pytestmark = pytest.mark.django_db

# The routes API.md lists as needing no bearer token (under /api/v1).
PUBLIC = {
    "api/v1/auth/register",
    "api/v1/auth/login",
    "api/v1/auth/refresh",
    "api/v1/webhooks/gateway",
    "api/v1/webhooks/bank",
}
OTHER_KEY = "an attacker's key that is at least thirty-two bytes long"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    return jwt.decode(token, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])


def _header(alg: str) -> str:
    return _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())


def _hmac_token(header: dict, claims: dict, key: str) -> str:
    """A JWT with any header, signed HMAC-SHA256 with `key` whatever the header says."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def forgeries(token: str, *, other_user_id) -> dict[str, str]:
    """Bad variants of a valid token (access or refresh) of a live login."""
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    claims = _claims(token)
    header, payload, signature = token.split(".")
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "alg none": f"{_header('none')}.{payload}.",
        "alg None, signature kept": f"{_header('None')}.{payload}.{signature}",
        "HS256 with another key": jwt.encode(claims, OTHER_KEY, algorithm="HS256"),
        "HS512 with our key": jwt.encode(claims, key, algorithm="HS512"),
        "RS256 header over an HMAC with our key": _hmac_token({"alg": "RS256", "typ": "JWT"}, claims, key),
        "expired": jwt.encode(claims | {"exp": int(time.time()) - 1}, key, algorithm="HS256"),
        "no exp": jwt.encode(no_exp, key, algorithm="HS256"),
        "payload tampered (another user), signature kept": (
            f"{header}.{_b64(json.dumps(claims | {'sub': str(other_user_id)}).encode())}.{signature}"
        ),
        "signature tampered": f"{header}.{payload}.{flipped}",
        "signed, but sub is another user of this family": jwt.encode(
            claims | {"sub": str(other_user_id)}, key, algorithm="HS256"
        ),
        "signed, unknown family": jwt.encode(claims | {"fam": str(uuid.uuid4())}, key, algorithm="HS256"),
        "not a JWT": "x" * 40,
    }


def _api_calls() -> list[tuple[str, str, str]]:
    """(route, method, path) of every API route and method; ids are random (never found)."""
    calls = []
    for route in url_routes():
        if not route.route.startswith("api/v1/"):
            continue
        path = "/" + route.route
        for name in ("transaction_id", "payment_id", "endpoint_id", "withdrawal_id", "wallet_id", "campaign_id"):
            path = path.replace(f"<str:{name}>", str(uuid.uuid4()))
        path = path.replace("<str:adjustment_id>", str(uuid.uuid4())).replace("<str:month>", "2026-01")
        assert "<" not in path, f"a parameter this test does not fill in: {route.route}"
        # DRF adds HEAD beside GET on a view's first request: HEAD gets GET's answer without
        # a body, so GET stands for both.
        for method in [m for m in route.callback.actions if m != "head"]:
            calls.append((route.route, method, path))
    return calls


def _call(api, method: str, path: str, **headers):
    call = getattr(api, method)
    extra = {"HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex}
    if method == "get":
        return call(path, **headers, **extra)
    return call(path, {}, format="json", **headers, **extra)


@pytest.fixture
def login():
    """Alice's live login, and bob (whose id the forgeries borrow)."""
    alice, _ = register_user(name="alice")
    bob, _ = register_user(name="bob")
    return alice, bob, session_login(email=alice.email, password=DEFAULT_PASSWORD)


def test_the_public_routes_exist():
    assert {r.route for r in url_routes()} >= PUBLIC


def test_every_route_but_the_public_ones_refuses_a_request_without_a_token(api, login):
    # given
    before = db_snapshot()
    for route, method, path in _api_calls():
        if route in PUBLIC:
            continue
        # when
        response = _call(api, method, path)
        # then
        assert response.status_code == 401, (method, route, response.status_code)
        assert response.json()["code"] == "authentication_required", (method, route)
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert snapshot_diff(before, db_snapshot()) == {}


def test_every_authenticated_route_refuses_every_forged_access_token(api, login):
    # given
    _, bob, pair = login
    forged = forgeries(pair["access_token"], other_user_id=bob.id)
    forged["refresh token as access token"] = pair["refresh_token"]
    before = db_snapshot()
    for route, method, path in _api_calls():
        if route in PUBLIC:
            continue
        for kind, token in forged.items():
            # when
            response = _call(api, method, path, HTTP_AUTHORIZATION=f"Bearer {token}")
            # then
            assert response.status_code == 401, (kind, method, route, response.status_code)
            assert response.json()["code"] == "invalid_token", (kind, method, route)
    # the genuine token still works, and nothing was written
    assert api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}").status_code == 200
    assert snapshot_diff(before, db_snapshot()) == {}


@pytest.mark.parametrize("how", ["logout", "reuse"])
def test_every_authenticated_route_refuses_the_access_tokens_of_a_revoked_login(api, login, how):
    # given: a login rotated once, then revoked by logout or by reuse of its first refresh token
    _, _, first = login
    second = session_refresh(refresh_token=first["refresh_token"])
    if how == "logout":
        session_logout(family_id=_claims(first["refresh_token"])["fam"])
    else:
        with pytest.raises(InvalidRefreshToken, match="already used"):
            session_refresh(refresh_token=first["refresh_token"])
    assert TokenFamily.objects.get(id=_claims(first["refresh_token"])["fam"]).revoked_at is not None
    for route, method, path in _api_calls():
        if route in PUBLIC:
            continue
        for token in (first["access_token"], second["access_token"]):
            # when
            response = _call(api, method, path, HTTP_AUTHORIZATION=f"Bearer {token}")
            # then
            assert (response.status_code, response.json()["code"]) == (401, "invalid_token"), (how, method, route)
    refreshed = api.post("/api/v1/auth/refresh", {"refresh_token": second["refresh_token"]}, format="json")
    assert refreshed.status_code == 401


def test_refresh_refuses_every_forged_refresh_token_and_the_login_goes_on(api, login):
    # given
    _, bob, pair = login
    forged = forgeries(pair["refresh_token"], other_user_id=bob.id)
    forged["access token as refresh token"] = pair["access_token"]
    family = _claims(pair["refresh_token"])["fam"]
    for kind, token in forged.items():
        # when
        response = api.post("/api/v1/auth/refresh", {"refresh_token": token}, format="json")
        # then
        assert (response.status_code, response.json()["code"]) == (401, "invalid_refresh_token"), kind
    # a forgery is not a reuse: it proves nothing about the real token, so the login goes on
    assert TokenFamily.objects.get(id=family).revoked_at is None
    assert api.post("/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]}, format="json").status_code == 200


def test_refresh_reuse_revokes_the_family_over_http_and_a_new_login_is_unaffected(api, login):
    # given: two logins; the first is rotated, and its old refresh token is replayed
    alice, _, first = login
    other = session_login(email=alice.email, password=DEFAULT_PASSWORD)
    rotated = api.post("/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}, format="json").json()

    # when
    replay = api.post("/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]}, format="json")

    # then: refused, the rotated pair is dead too, the other login lives
    assert (replay.status_code, replay.json()["code"]) == (401, "invalid_refresh_token")
    again = api.post("/api/v1/auth/refresh", {"refresh_token": rotated["refresh_token"]}, format="json")
    assert again.status_code == 401
    assert api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {rotated['access_token']}").status_code == 401
    assert api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {other['access_token']}").status_code == 200
