"""accounts.tokens services: families, rotation, reuse detection and their concurrency."""

from __future__ import annotations

import threading

import jwt
import pytest
from django.conf import settings
from django.db import connection

from accounts.models import TokenFamily
from accounts.tests.factories import UserFactory
from accounts.tokens import session_login, session_logout, session_refresh
from walletsite.errors import InvalidCredentials, InvalidRefreshToken


def _claims(token: str) -> dict:
    return jwt.decode(token, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])


@pytest.fixture
def user(db):
    return UserFactory(email="ana@example.com")


def test_each_login_is_its_own_family(user):
    # when
    first = session_login(email="ana@example.com", password="correct horse battery")
    second = session_login(email="ana@example.com", password="correct horse battery")

    # then
    assert _claims(first["refresh_token"])["fam"] != _claims(second["refresh_token"])["fam"]
    assert TokenFamily.objects.filter(user=user).count() == 2


def test_login_of_an_unknown_email_is_invalid_credentials(db):
    # when / then
    with pytest.raises(InvalidCredentials):
        session_login(email="nobody@example.com", password="correct horse battery")


def test_refresh_keeps_the_family_and_moves_current_jti(user):
    # given
    first = session_login(email="ana@example.com", password="correct horse battery")

    # when
    second = session_refresh(refresh_token=first["refresh_token"])

    # then
    fam = _claims(first["refresh_token"])["fam"]
    assert _claims(second["refresh_token"])["fam"] == fam
    assert _claims(second["access_token"])["fam"] == fam
    assert TokenFamily.objects.get(id=fam).current_jti == _claims(second["refresh_token"])["jti"]


def test_reuse_revocation_is_committed_although_the_call_fails(user):
    # given
    first = session_login(email="ana@example.com", password="correct horse battery")
    session_refresh(refresh_token=first["refresh_token"])

    # when
    with pytest.raises(InvalidRefreshToken):
        session_refresh(refresh_token=first["refresh_token"])

    # then
    family = TokenFamily.objects.get(id=_claims(first["refresh_token"])["fam"])
    assert family.revoked_reason == "reuse" and family.revoked_at is not None


def test_logout_twice_keeps_the_first_reason(user):
    # given
    pair = session_login(email="ana@example.com", password="correct horse battery")
    fam = _claims(pair["refresh_token"])["fam"]
    session_logout(family_id=fam)
    revoked_at = TokenFamily.objects.get(id=fam).revoked_at

    # when
    session_logout(family_id=fam, reason="other")

    # then
    family = TokenFamily.objects.get(id=fam)
    assert family.revoked_reason == "logout" and family.revoked_at == revoked_at


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_refreshes_of_one_token_give_exactly_one_pair():
    # given
    UserFactory(email="ana@example.com")
    pair = session_login(email="ana@example.com", password="correct horse battery")
    start = threading.Barrier(2)
    outcomes: list[object] = []
    lock = threading.Lock()

    def refresh():
        try:
            start.wait()
            try:
                outcome: object = session_refresh(refresh_token=pair["refresh_token"])
            except InvalidRefreshToken:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: one new pair, and it works: the loser raced the winner, it did not reuse a token
    pairs = [o for o in outcomes if isinstance(o, dict)]
    assert len(pairs) == 1
    assert outcomes.count("refused") == 1
    family = TokenFamily.objects.get(id=_claims(pair["refresh_token"])["fam"])
    assert family.current_jti == _claims(pairs[0]["refresh_token"])["jti"]
    assert family.revoked_at is None
    assert "access_token" in session_refresh(refresh_token=pairs[0]["refresh_token"])
