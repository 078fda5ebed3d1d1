"""POST /api/v1/auth/login, /auth/refresh, /auth/logout over HTTP, and the bearer token
checks every authenticated route shares (exercised on GET /api/v1/me)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import TokenFamily
from wallets.tests.factories import register_user

PASSWORD = "correct horse battery"
pytestmark = pytest.mark.django_db


def _login(api, email, password=PASSWORD):
    return api.post("/api/v1/auth/login", {"email": email, "password": password}, format="json")


def _refresh(api, token):
    return api.post("/api/v1/auth/refresh", {"refresh_token": token}, format="json")


def _me(api, access):
    return api.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {access}")


def _assert_problem(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:wallet:error:{code}"
    return body


@pytest.fixture
def user():
    user, _ = register_user(email="ana@example.com")
    return user


# --- login -------------------------------------------------------------------------------


def test_login_returns_a_bearer_pair_whose_tokens_carry_user_and_family(api, user):
    # when
    response = _login(api, "ana@example.com")

    # then
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds())
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    access = jwt.decode(body["access_token"], key, algorithms=["HS256"])
    refresh = jwt.decode(body["refresh_token"], key, algorithms=["HS256"])
    assert access["sub"] == refresh["sub"] == str(user.id)
    assert access["fam"] == refresh["fam"]
    family = TokenFamily.objects.get(id=refresh["fam"])
    assert family.user_id == user.id and family.current_jti == refresh["jti"]
    assert OutstandingToken.objects.filter(jti=refresh["jti"]).exists()
    assert _me(api, body["access_token"]).status_code == 200


def test_login_email_is_case_insensitive(api, user):
    # when
    response = _login(api, "ANA@Example.COM")

    # then
    assert response.status_code == 200


def test_wrong_password_and_unknown_email_answer_the_same(api, user):
    # when
    wrong_password = _login(api, "ana@example.com", "not the password")
    unknown_email = _login(api, "nobody@example.com")

    # then
    first = _assert_problem(wrong_password, 401, "invalid_credentials")
    second = _assert_problem(unknown_email, 401, "invalid_credentials")
    assert first == second
    assert TokenFamily.objects.count() == 0


def test_unknown_email_still_runs_the_password_hasher(api, user, monkeypatch):
    # given: count hashes made by the configured hasher
    from django.contrib.auth import hashers

    calls = []
    real = hashers.make_password

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("django.contrib.auth.base_user.make_password", counting)

    # when
    _login(api, "nobody@example.com")

    # then
    assert calls == [1]


def test_inactive_user_cannot_log_in(api, user):
    # given
    user.is_active = False
    user.save(update_fields=["is_active"])

    # when
    response = _login(api, "ana@example.com")

    # then
    _assert_problem(response, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ana@example.com"},
        {"password": PASSWORD},
        {"email": "ana@example.com", "password": PASSWORD, "remember": True},
        {"email": 12, "password": PASSWORD},
        {"email": "ana@example.com", "password": 12345678},
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "ana@example.com", "password": "x" * 129},
        [],
    ],
)
def test_login_refuses_malformed_bodies(api, user, body):
    # when
    response = api.post("/api/v1/auth/login", body, format="json")

    # then
    _assert_problem(response, 400, "validation_failed")


def test_login_refuses_non_json(api, user):
    # when
    response = api.post("/api/v1/auth/login", "email=ana", content_type="application/x-www-form-urlencoded")

    # then
    _assert_problem(response, 415, "unsupported_media_type")


def test_login_ignores_a_stale_bearer_header(api, user):
    # when: a client sends an old, broken Authorization header with its login
    response = api.post(
        "/api/v1/auth/login",
        {"email": "ana@example.com", "password": PASSWORD},
        format="json",
        HTTP_AUTHORIZATION="Bearer garbage",
    )

    # then
    assert response.status_code == 200


# --- refresh -----------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_stops_working(api, user):
    # given
    first = _login(api, "ana@example.com").json()

    # when
    response = _refresh(api, first["refresh_token"])

    # then
    assert response.status_code == 200
    second = response.json()
    assert second["token_type"] == "Bearer"
    assert second["refresh_token"] != first["refresh_token"]
    key = settings.SIMPLE_JWT["SIGNING_KEY"]
    old = jwt.decode(first["refresh_token"], key, algorithms=["HS256"])
    new = jwt.decode(second["refresh_token"], key, algorithms=["HS256"])
    assert new["fam"] == old["fam"]
    assert TokenFamily.objects.get(id=new["fam"]).current_jti == new["jti"]
    assert BlacklistedToken.objects.filter(token__jti=old["jti"]).exists()
    assert _me(api, second["access_token"]).status_code == 200
    # and the old one is refused
    _assert_problem(_refresh(api, first["refresh_token"]), 401, "invalid_refresh_token")


def test_reusing_a_rotated_refresh_token_revokes_the_whole_login(api, user):
    # given: a login rotated twice; the attacker holds the first refresh token
    first = _login(api, "ana@example.com").json()
    second = _refresh(api, first["refresh_token"]).json()
    third = _refresh(api, second["refresh_token"]).json()

    # when
    reuse = _refresh(api, first["refresh_token"])

    # then: refused, and the newest tokens of the family stop working too
    _assert_problem(reuse, 401, "invalid_refresh_token")
    fam = jwt.decode(first["refresh_token"], settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])["fam"]
    family = TokenFamily.objects.get(id=fam)
    assert family.revoked_at is not None and family.revoked_reason == "reuse"
    _assert_problem(_refresh(api, third["refresh_token"]), 401, "invalid_refresh_token")
    _assert_problem(_me(api, third["access_token"]), 401, "invalid_token")


def test_reuse_revokes_only_that_login(api, user):
    # given: two logins (two devices); one is compromised
    phone = _login(api, "ana@example.com").json()
    laptop = _login(api, "ana@example.com").json()
    _refresh(api, phone["refresh_token"])

    # when
    _refresh(api, phone["refresh_token"])

    # then
    assert _me(api, laptop["access_token"]).status_code == 200
    assert _refresh(api, laptop["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not.a.jwt",
        "abc",
    ],
)
def test_refresh_refuses_garbage(api, user, token):
    # when
    response = _refresh(api, token)

    # then
    code = "validation_failed" if token == "" else "invalid_refresh_token"
    _assert_problem(response, 400 if token == "" else 401, code)


def test_refresh_refuses_an_access_token(api, user):
    # given
    pair = _login(api, "ana@example.com").json()

    # when
    response = _refresh(api, pair["access_token"])

    # then
    _assert_problem(response, 401, "invalid_refresh_token")


def test_refresh_refuses_a_tampered_refresh_token(api, user):
    # given: the payload changed to another family, signature kept
    pair = _login(api, "ana@example.com").json()
    header, payload, signature = pair["refresh_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 3600
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    # when
    response = _refresh(api, f"{header}.{forged}.{signature}")

    # then
    _assert_problem(response, 401, "invalid_refresh_token")


def test_refresh_refuses_an_expired_refresh_token(api, user):
    # given
    pair = _login(api, "ana@example.com").json()
    claims = jwt.decode(pair["refresh_token"], settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])
    claims["exp"] = claims["iat"] - 1
    expired = jwt.encode(claims, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS256")

    # when
    response = _refresh(api, expired)

    # then
    _assert_problem(response, 401, "invalid_refresh_token")
    # an expired token is not a reuse: the login goes on
    assert TokenFamily.objects.get(id=claims["fam"]).revoked_at is None


def test_refresh_refuses_a_refresh_token_signed_with_another_key(api, user):
    # given
    pair = _login(api, "ana@example.com").json()
    claims = jwt.decode(pair["refresh_token"], settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])
    forged = jwt.encode(claims, "another key of at least thirty-two bytes!!", algorithm="HS256")

    # when
    response = _refresh(api, forged)

    # then
    _assert_problem(response, 401, "invalid_refresh_token")


def test_refresh_of_a_logged_out_login_is_refused(api, user):
    # given
    pair = _login(api, "ana@example.com").json()
    api.post("/api/v1/auth/logout", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}")

    # when
    response = _refresh(api, pair["refresh_token"])

    # then
    _assert_problem(response, 401, "invalid_refresh_token")


def test_refresh_refuses_unknown_fields(api, user):
    # given
    pair = _login(api, "ana@example.com").json()

    # when
    response = api.post("/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"], "grant": "x"}, format="json")

    # then
    _assert_problem(response, 400, "validation_failed")


# --- logout ------------------------------------------------------------------------------


def test_logout_ends_the_login_of_the_access_token(api, user):
    # given
    pair = _login(api, "ana@example.com").json()
    other = _login(api, "ana@example.com").json()

    # when
    response = api.post("/api/v1/auth/logout", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}")

    # then
    assert response.status_code == 204
    assert response.content == b""
    _assert_problem(_me(api, pair["access_token"]), 401, "invalid_token")
    _assert_problem(_refresh(api, pair["refresh_token"]), 401, "invalid_refresh_token")
    assert TokenFamily.objects.filter(revoked_reason="logout").count() == 1
    # another login of the same user goes on
    assert _me(api, other["access_token"]).status_code == 200


@pytest.mark.parametrize("body", [None, {}])
def test_logout_takes_an_empty_body(api, user, body):
    # given
    pair = _login(api, "ana@example.com").json()

    # when
    response = api.post("/api/v1/auth/logout", body, format="json", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}")

    # then
    assert response.status_code == 204


def test_logout_with_a_refresh_token_also_ends_that_login(api, user):
    # given: two logins; logging out of one names the other's refresh token too
    pair = _login(api, "ana@example.com").json()
    other = _login(api, "ana@example.com").json()

    # when
    response = api.post(
        "/api/v1/auth/logout",
        {"refresh_token": other["refresh_token"]},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}",
    )

    # then
    assert response.status_code == 204
    _assert_problem(_me(api, other["access_token"]), 401, "invalid_token")
    _assert_problem(_me(api, pair["access_token"]), 401, "invalid_token")


def test_logout_refuses_someone_elses_refresh_token_and_changes_nothing(api, user):
    # given
    register_user(email="mallory@example.com")
    pair = _login(api, "ana@example.com").json()
    victim = _login(api, "mallory@example.com").json()

    # when
    response = api.post(
        "/api/v1/auth/logout",
        {"refresh_token": victim["refresh_token"]},
        format="json",
        HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}",
    )

    # then
    _assert_problem(response, 401, "invalid_refresh_token")
    assert TokenFamily.objects.filter(revoked_at__isnull=False).count() == 0


def test_logout_refuses_unknown_fields(api, user):
    # given
    pair = _login(api, "ana@example.com").json()

    # when
    response = api.post(
        "/api/v1/auth/logout", {"all": True}, format="json", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}"
    )

    # then
    _assert_problem(response, 400, "validation_failed")
    assert _me(api, pair["access_token"]).status_code == 200


def test_logout_needs_a_bearer_token(api, user):
    # when
    response = api.post("/api/v1/auth/logout")

    # then
    body = _assert_problem(response, 401, "authentication_required")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert body["title"]


# --- the bearer token --------------------------------------------------------------------


def _claims(access):
    return jwt.decode(access, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_no_authorization_header_is_authentication_required(api, user):
    # when
    response = api.get("/api/v1/me")

    # then
    _assert_problem(response, 401, "authentication_required")


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Basic YW5hOnB3", "Token abc", "Bearer not-a-token", "Bearer a.b.c"],
)
def test_malformed_authorization_is_invalid_token(api, user, header):
    # when
    response = api.get("/api/v1/me", HTTP_AUTHORIZATION=header)

    # then
    _assert_problem(response, 401, "invalid_token")


def test_tampered_signature_is_invalid_token(api, user):
    # given
    access = _login(api, "ana@example.com").json()["access_token"]
    header, payload, signature = access.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]

    # when / then
    _assert_problem(_me(api, f"{header}.{payload}.{flipped}"), 401, "invalid_token")


def test_tampered_payload_is_invalid_token(api, user):
    # given: another user's id in the payload, the signature kept
    other, _ = register_user(email="bob@example.com")
    access = _login(api, "ana@example.com").json()["access_token"]
    header, _, signature = access.split(".")
    claims = _claims(access) | {"sub": str(other.id)}

    # when / then
    _assert_problem(_me(api, f"{header}.{_b64(claims)}.{signature}"), 401, "invalid_token")


def test_token_signed_with_another_key_is_invalid_token(api, user):
    # given
    claims = _claims(_login(api, "ana@example.com").json()["access_token"])
    forged = jwt.encode(claims, "some other key that is long enough to use", algorithm="HS256")

    # when / then
    _assert_problem(_me(api, forged), 401, "invalid_token")


def test_alg_none_is_invalid_token(api, user):
    # given
    claims = _claims(_login(api, "ana@example.com").json()["access_token"])
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."

    # when / then
    _assert_problem(_me(api, unsigned), 401, "invalid_token")


def test_another_algorithm_with_the_right_key_is_invalid_token(api, user):
    # given: HS512 with our own key; only HS256 is accepted
    claims = _claims(_login(api, "ana@example.com").json()["access_token"])
    other_alg = jwt.encode(claims, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS512")

    # when / then
    _assert_problem(_me(api, other_alg), 401, "invalid_token")


def test_expired_access_token_is_invalid_token(api, user):
    # given: a token of a live login, minted already expired
    pair = _login(api, "ana@example.com").json()
    token = AccessToken()
    token.set_exp(lifetime=-timedelta(seconds=1))
    token["sub"] = str(user.id)
    token["fam"] = _claims(pair["access_token"])["fam"]

    # when / then
    _assert_problem(_me(api, str(token)), 401, "invalid_token")


def test_refresh_token_as_bearer_is_invalid_token(api, user):
    # given
    pair = _login(api, "ana@example.com").json()

    # when / then
    _assert_problem(_me(api, pair["refresh_token"]), 401, "invalid_token")


def test_token_without_family_is_invalid_token(api, user):
    # given: correctly signed, but minted outside a login
    token = AccessToken()
    token["sub"] = str(user.id)

    # when / then
    _assert_problem(_me(api, str(token)), 401, "invalid_token")


def test_token_of_a_deactivated_user_is_invalid_token(api, user):
    # given
    access = _login(api, "ana@example.com").json()["access_token"]
    user.is_active = False
    user.save(update_fields=["is_active"])

    # when / then
    _assert_problem(_me(api, access), 401, "invalid_token")


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout"])
def test_auth_routes_take_only_post(api, path):
    # when
    response = api.get(path)

    # then
    _assert_problem(response, 405, "method_not_allowed")
