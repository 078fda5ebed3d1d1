"""POST /api/v1/auth/register and wallets.registration.user_register."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

from accounts.models import Pin, User
from ledger.models import Account
from wallets.models import Wallet
from wallets.registration import user_register
from walletsite.errors import EmailTaken, ValidationFailed

pytestmark = pytest.mark.django_db

GOOD = {"email": "ana@example.com", "password": "correct horse battery", "pin": "1234"}


def _register(api, **changes):
    body = {**GOOD, **changes}
    body = {key: value for key, value in body.items() if value is not ...}
    return api.post("/api/v1/auth/register", body, format="json")


def _problem(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code
    return response.json()


def test_register_creates_user_pin_and_one_empty_wallet(api):
    # when
    response = _register(api, name="Ana Lima", phone="+91 98765 43210")

    # then
    assert response.status_code == 201
    body = response.json()
    user = User.objects.get(email="ana@example.com")
    assert body["user"] == {"id": str(user.id), "email": "ana@example.com", "name": "Ana Lima", "role": "customer"}
    wallet = Wallet.objects.get(user=user)
    assert body["wallet"]["id"] == str(wallet.id)
    assert body["wallet"]["handle"] == wallet.handle == "ana.lima@wallet"
    assert body["wallet"]["currency"] == "INR"
    assert body["wallet"]["balance"] == 0
    assert wallet.account.kind == Account.Kind.CUSTOMER and wallet.account.balance == 0
    assert user.check_password("correct horse battery") and not user.is_staff
    assert user.phone == "+91 98765 43210"
    assert Pin.objects.filter(user=user).exists()


def test_registered_user_can_log_in(api):
    # given
    _register(api)

    # when
    response = api.post(
        "/api/v1/auth/login", {"email": "ana@example.com", "password": "correct horse battery"}, format="json"
    )

    # then
    assert response.status_code == 200


def test_register_a_merchant(api):
    # when
    response = _register(api, role="merchant", business_name="Ana's Cafe", name="Ana")

    # then
    assert response.status_code == 201
    assert response.json()["user"]["role"] == "merchant"
    assert User.objects.get(email="ana@example.com").business_name == "Ana's Cafe"


def test_merchant_without_business_name_is_refused(api):
    # when
    response = _register(api, role="merchant")

    # then
    _problem(response, 400, "validation_failed")
    assert not User.objects.exists()


def test_business_name_for_a_customer_is_refused(api):
    # when / then
    _problem(_register(api, business_name="Shop"), 400, "validation_failed")


@pytest.mark.parametrize("role", ["admin", "staff", "superuser", "", "Customer", 1, None, True])
def test_any_other_role_is_refused(api, role):
    # when
    response = _register(api, role=role)

    # then
    _problem(response, 400, "validation_failed")
    assert not User.objects.exists()


@pytest.mark.parametrize("field", ["is_staff", "is_superuser", "id", "balance", "emial"])
def test_unknown_fields_are_refused(api, field):
    # when
    response = _register(api, **{field: True})

    # then
    body = _problem(response, 400, "validation_failed")
    assert body["errors"][0]["field"] == field
    assert not User.objects.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"email": ...},
        {"password": ...},
        {"pin": ...},
        {"email": "not-an-email"},
        {"email": "a@"},
        {"email": ""},
        {"email": 42},
        {"email": None},
        {"email": "a" * 250 + "@example.com"},
        {"password": "short77"},
        {"password": "x" * 129},
        {"password": 12345678},
        {"password": None},
        {"pin": "123"},
        {"pin": "1234567"},
        {"pin": "12a4"},
        {"pin": "12 34"},
        {"pin": "\u0661\u0662\u0663\u0664"},
        {"pin": 1234},
        {"pin": None},
        {"name": 7},
        {"name": "x" * 121},
        {"phone": "call me"},
        {"phone": 9876543210},
    ],
)
def test_invalid_bodies_are_refused(api, changes):
    # when
    response = _register(api, **changes)

    # then
    body = _problem(response, 400, "validation_failed")
    assert body["errors"]
    assert not User.objects.exists()


def test_passwords_of_8_and_128_characters_are_accepted(api):
    # when
    short = _register(api, email="a@example.com", password="x" * 8)
    long = _register(api, email="b@example.com", password="y" * 128)

    # then
    assert short.status_code == long.status_code == 201


def test_six_digit_pin_is_accepted(api):
    # when / then
    assert _register(api, pin="012345").status_code == 201


def test_body_that_is_not_an_object_is_refused(api):
    # when / then
    _problem(api.post("/api/v1/auth/register", [GOOD], format="json"), 400, "validation_failed")


def test_body_that_is_not_json_is_refused(api):
    # when
    response = api.generic("POST", "/api/v1/auth/register", "{not json", content_type="application/json")

    # then
    _problem(response, 400, "validation_failed")


def test_second_registration_of_an_email_is_email_taken(api):
    # given
    _register(api)

    # when
    response = _register(api, password="another password", pin="9999")

    # then
    _problem(response, 409, "email_taken")
    assert User.objects.count() == 1 and Wallet.objects.count() == 1


def test_email_taken_regardless_of_case(api):
    # given
    _register(api)

    # when
    response = _register(api, email="ANA@EXAMPLE.com")

    # then
    _problem(response, 409, "email_taken")


def test_registration_needs_no_token_and_ignores_a_stale_one(api):
    # when
    response = api.post("/api/v1/auth/register", GOOD, format="json", HTTP_AUTHORIZATION="Bearer expired.or.junk")

    # then
    assert response.status_code == 201


def test_same_name_gets_a_different_handle(api):
    # given
    first = _register(api, name="Ana").json()

    # when
    second = _register(api, email="other@example.com", name="Ana").json()

    # then
    assert first["wallet"]["handle"] == "ana@wallet"
    assert second["wallet"]["handle"] != "ana@wallet"
    assert second["wallet"]["handle"].startswith("ana.")


def test_service_refuses_what_the_api_refuses():
    # when / then
    with pytest.raises(ValidationFailed):
        user_register(email="a@example.com", password="short", pin="1234")
    with pytest.raises(ValidationFailed):
        user_register(email="a@example.com", password="long enough", pin="12")
    with pytest.raises(ValidationFailed):
        user_register(email="a@example.com", password="long enough", pin="1234", role="admin")
    with pytest.raises(ValidationFailed):
        user_register(email="a@example.com", password="long enough", pin="1234", role="merchant")
    assert not User.objects.exists()


def test_service_raises_email_taken():
    # given
    user_register(email="a@example.com", password="long enough", pin="1234")

    # when / then
    with pytest.raises(EmailTaken):
        user_register(email="A@example.com", password="long enough", pin="1234")


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_registrations_of_one_email_create_one_user():
    # given: each thread with its own client and database connection; the emails differ
    # in case only, so the database's lower(email) index is what decides
    count = 10
    start = threading.Barrier(count)
    statuses: list[int] = []
    codes: list[str] = []
    lock = threading.Lock()

    def register(i: int):
        try:
            client = Client()
            email = "Race@Example.com" if i % 2 else "race@example.com"
            start.wait()
            response = client.post(
                "/api/v1/auth/register",
                {**GOOD, "email": email, "pin": f"{1000 + i}"},
                content_type="application/json",
            )
            with lock:
                statuses.append(response.status_code)
                if response.status_code != 201:
                    codes.append(response.json()["code"])
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=register, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then
    assert sorted(statuses) == [201] + [409] * (count - 1)
    assert codes == ["email_taken"] * (count - 1)
    assert User.objects.filter(email__iexact="race@example.com").count() == 1
    assert Wallet.objects.count() == 1
    assert Account.objects.filter(kind=Account.Kind.CUSTOMER).count() == 1
