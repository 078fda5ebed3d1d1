"""POST /api/v1/webhooks/gateway: the signature on the raw body, strict events, and a
payment credited exactly once whatever arrives, in whatever order, however often."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from ledger.models import AuditLog, Entry, OutboxEvent, Transaction
from ledger.tests.invariants import assert_ledger_consistent
from wallets.gateway import signature_header
from wallets.models import GatewayEvent, PaymentAttempt, Wallet
from wallets.tests.factories import register_user
from wallets.topups import payment_attempt_create, payment_attempts_expire

WEBHOOK = "/api/v1/webhooks/gateway"


def secret() -> str:
    return settings.WALLET["GATEWAY_WEBHOOK_SECRET"]


def event_for(
    attempt: PaymentAttempt,
    *,
    type: str = "payment.succeeded",
    event_id: str | None = None,
    amount: int | None = None,
    currency: str | None = None,
    reference: str = "gw_ref_1",
) -> dict:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": type,
        "data": {
            "payment_id": str(attempt.id),
            "amount": attempt.amount if amount is None else amount,
            "currency": currency or attempt.currency,
            "gateway_reference": reference,
        },
    }


def deliver(client, event=None, *, raw: bytes | None = None, header: str | None = None, timestamp: int | None = None):
    """POST an event signed as the gateway signs it (or with the given header)."""
    body = raw if raw is not None else json.dumps(event).encode()
    if header is None:
        header = signature_header(secrets=secret(), body=body, timestamp=timestamp)
    extra = {} if header == "" else {"HTTP_GATEWAY_SIGNATURE": header}
    return client.post(WEBHOOK, data=body, content_type="application/json", **extra)


def balance(wallet: Wallet) -> int:
    wallet.account.refresh_from_db()
    return wallet.account.balance


def credits(attempt: PaymentAttempt) -> int:
    return Transaction.objects.filter(reference=f"payment_attempt:{attempt.id}").count()


@pytest.fixture
def attempt(db):
    _, wallet = register_user()
    return payment_attempt_create(wallet=wallet, amount=50000)


def _nothing_changed(attempt: PaymentAttempt) -> None:
    attempt.refresh_from_db()
    assert attempt.status == "pending" and not attempt.flagged_for_review
    assert not GatewayEvent.objects.exists()
    assert not Entry.objects.exists()
    assert not OutboxEvent.objects.filter(type="payment.succeeded").exists()


# --- the happy path ---------------------------------------------------------------------


def test_success_credits_the_wallet(api, attempt):
    # given
    event = event_for(attempt, reference="gw_abc")
    # when
    response = deliver(api, event)
    # then
    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": True,
        "result": "credited",
        "payment_id": str(attempt.id),
        "status": "succeeded",
    }
    attempt.refresh_from_db()
    assert attempt.status == "succeeded"
    assert attempt.gateway_reference == "gw_abc"
    assert not attempt.flagged_for_review
    assert balance(attempt.wallet) == 50000
    txn = attempt.transaction
    assert txn.type == "deposit" and txn.reference == f"payment_attempt:{attempt.id}"
    legs = sorted(txn.entries.values_list("account__code", "amount"), key=lambda leg: leg[1])
    assert legs == [("gateway_clearing", -50000), (None, 50000)]
    assert GatewayEvent.objects.get(id=event["id"]).payment_attempt_id == attempt.id
    outbox = OutboxEvent.objects.get(type="payment.succeeded")
    assert outbox.payload["payment_id"] == str(attempt.id)
    assert outbox.payload["amount"] == 50000
    assert outbox.payload["transaction_id"] == str(txn.id)
    assert_ledger_consistent()


def test_payment_attempt_shows_succeeded_after_the_webhook(api, attempt):
    # given
    from wallets.tests.factories import auth_header

    deliver(api, event_for(attempt))
    # when
    response = api.get(f"/api/v1/wallet/payments/{attempt.id}", **auth_header(attempt.wallet.user))
    # then
    assert response.json()["status"] == "succeeded"


def test_failure_marks_the_attempt_failed(api, attempt):
    # when
    response = deliver(api, event_for(attempt, type="payment.failed"))
    # then
    assert response.status_code == 200
    assert response.json()["result"] == "failed"
    attempt.refresh_from_db()
    assert attempt.status == "failed" and not attempt.flagged_for_review
    assert balance(attempt.wallet) == 0
    assert_ledger_consistent()


# --- signatures -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda body, now: "", id="missing"),
        pytest.param(lambda body, now: "garbage", id="garbage"),
        pytest.param(lambda body, now: f"t={now}", id="no-v1"),
        pytest.param(lambda body, now: signature_header(secrets=secret(), body=body).split(",")[1], id="no-t"),
        pytest.param(lambda body, now: f"t=abc,v1={'0' * 64}", id="t-not-a-number"),
        pytest.param(lambda body, now: f"t={now},t={now},v1={'0' * 64}", id="two-t"),
        pytest.param(lambda body, now: f"t={now},v1=", id="empty-v1"),
        pytest.param(lambda body, now: f"t={now},v1={'0' * 64}", id="wrong-v1"),
        pytest.param(lambda body, now: signature_header(secrets="another secret" * 3, body=body), id="wrong-secret"),
        pytest.param(lambda body, now: signature_header(secrets=secret(), body=body + b" "), id="other-body"),
        pytest.param(lambda body, now: signature_header(secrets=secret(), body=body, timestamp=now - 301), id="old"),
        pytest.param(lambda body, now: signature_header(secrets=secret(), body=body, timestamp=now + 301), id="future"),
        pytest.param(lambda body, now: f"t={now},v1={'a' * 2000}", id="too-long"),
    ],
)
def test_bad_signatures_are_refused_and_change_nothing(api, attempt, make_header):
    # given
    body = json.dumps(event_for(attempt)).encode()
    # when
    response = deliver(api, raw=body, header=make_header(body, int(time.time())))
    # then
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_signature"
    _nothing_changed(attempt)
    assert_ledger_consistent()


def test_signature_covers_the_raw_bytes_not_the_parsed_json(api, attempt):
    # given: the same JSON with other whitespace has another signature
    event = event_for(attempt)
    signed = json.dumps(event).encode()
    sent = json.dumps(event, indent=2).encode()
    # when
    response = deliver(api, raw=sent, header=signature_header(secrets=secret(), body=signed))
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    _nothing_changed(attempt)


def test_timestamp_inside_the_tolerance_is_accepted(api, attempt):
    response = deliver(api, event_for(attempt), timestamp=int(time.time()) - 290)
    assert response.status_code == 200
    assert response.json()["result"] == "credited"


def test_any_of_several_signatures_may_match(api, attempt):
    # given: a gateway rotating its secret signs with the old and the new one
    body = json.dumps(event_for(attempt)).encode()
    header = signature_header(secrets=["the old secret, no longer ours......", secret()], body=body)
    assert header.count("v1=") == 2
    # when
    response = deliver(api, raw=body, header=header)
    # then
    assert response.status_code == 200
    assert response.json()["result"] == "credited"


def test_unknown_signature_schemes_are_skipped(api, attempt):
    body = json.dumps(event_for(attempt)).encode()
    header = signature_header(secrets=secret(), body=body) + ",v0=deadbeef"
    response = deliver(api, raw=body, header=header)
    assert response.status_code == 200


# --- event validation (after the signature) ----------------------------------------------


def _with(event: dict, path: str, value) -> dict:
    copy = json.loads(json.dumps(event))
    target = copy
    *parents, last = path.split(".")
    for name in parents:
        target = target[name]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return copy


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("type", "payment.refunded"),
        ("id", 12),
        ("id", ""),
        ("id", _DELETE),
        ("data", _DELETE),
        ("data", "x"),
        ("extra", 1),
        ("data.extra", 1),
        ("data.payment_id", _DELETE),
        ("data.amount", "50000"),
        ("data.amount", 50000.0),
        ("data.amount", 0),
        ("data.amount", -5),
        ("data.amount", True),
        ("data.currency", "inr"),
        ("data.currency", _DELETE),
        ("data.gateway_reference", None),
    ],
)
def test_malformed_events_are_refused_and_change_nothing(api, attempt, path, value):
    # given
    event = _with(event_for(attempt), path, value)
    # when
    response = deliver(api, event)
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    _nothing_changed(attempt)


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'"x"', b"", b"\xff\xfe"])
def test_a_signed_body_that_is_not_an_event_is_refused(api, attempt, raw):
    response = deliver(api, raw=raw)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    _nothing_changed(attempt)


def test_unknown_payment_is_not_found_and_not_recorded(api, attempt):
    # given
    event = event_for(attempt)
    event["data"]["payment_id"] = str(uuid.uuid4())
    # when
    response = deliver(api, event)
    # then
    assert response.status_code == 404
    assert response.json()["code"] == "payment_not_found"
    _nothing_changed(attempt)
    # A malformed id is just as unknown.
    event["data"]["payment_id"] = "pay_123"
    assert deliver(api, event).status_code == 404


# --- exactly once ------------------------------------------------------------------------


def test_redelivered_event_is_a_duplicate(api, attempt):
    # given
    event = event_for(attempt)
    deliver(api, event)
    # when
    again = deliver(api, event)
    # then
    assert again.status_code == 200
    assert again.json()["result"] == "duplicate"
    assert balance(attempt.wallet) == 50000
    assert credits(attempt) == 1
    assert OutboxEvent.objects.filter(type="payment.succeeded").count() == 1
    assert_ledger_consistent()


def test_same_payment_under_new_event_ids_is_credited_once(api, attempt):
    # given
    deliver(api, event_for(attempt, reference="gw_1"))
    # when
    answers = [deliver(api, event_for(attempt, reference="gw_1")) for _ in range(3)]
    # then
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["result"] for a in answers} == {"already_credited"}
    assert balance(attempt.wallet) == 50000
    assert credits(attempt) == 1
    attempt.refresh_from_db()
    assert not attempt.flagged_for_review
    assert_ledger_consistent()


def test_second_success_with_another_reference_is_flagged_not_credited(api, attempt):
    # given
    deliver(api, event_for(attempt, reference="gw_1"))
    # when
    response = deliver(api, event_for(attempt, reference="gw_2"))
    # then
    assert response.json()["result"] == "already_credited"
    attempt.refresh_from_db()
    assert attempt.flagged_for_review and "gw_2" in attempt.review_reason
    assert attempt.gateway_reference == "gw_1"
    assert credits(attempt) == 1 and balance(attempt.wallet) == 50000
    assert_ledger_consistent()


def test_the_database_refuses_a_second_credit_of_an_attempt(attempt):
    # given: the attempt credited once
    from django.db import IntegrityError

    from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post
    from wallets.topups import gateway_event_process

    gateway_event_process(event=event_for(attempt))
    # when / then: a bug that posts again under the attempt's reference cannot commit
    with pytest.raises(IntegrityError, match="ledger_txn_payment_attempt_once"), atomic():
        transaction_post(
            command=PostingCommand(
                type="deposit",
                legs=[Leg(system_account("gateway_clearing").id, -1), Leg(attempt.wallet.account_id, 1)],
                reference=f"payment_attempt:{attempt.id}",
            )
        )
    assert credits(attempt) == 1
    assert_ledger_consistent()


# --- contradictions and late news --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("amount", 49999), ("amount", 50001), ("amount", 10**12), ("currency", "USD")]
)
def test_amount_or_currency_mismatch_flags_and_credits_nothing(api, attempt, field, value):
    # given
    event = event_for(attempt, **{field: value})
    # when
    response = deliver(api, event)
    # then
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "amount_mismatch"
    attempt.refresh_from_db()
    assert attempt.status == "pending"
    assert attempt.flagged_for_review and str(value) in attempt.review_reason
    assert balance(attempt.wallet) == 0 and credits(attempt) == 0
    # The flag committed with the event, although the answer is an error.
    assert GatewayEvent.objects.filter(id=event["id"], payment_attempt=attempt).exists()
    assert AuditLog.objects.filter(action="payment_attempt.flag", target=f"payment_attempt:{attempt.id}").exists()
    assert_ledger_consistent()


def test_correct_event_after_a_mismatch_still_credits(api, attempt):
    # given
    deliver(api, event_for(attempt, amount=1))
    # when
    response = deliver(api, event_for(attempt))
    # then
    assert response.json()["result"] == "credited"
    assert balance(attempt.wallet) == 50000
    attempt.refresh_from_db()
    assert attempt.flagged_for_review  # the earlier mismatch stays on record
    assert_ledger_consistent()


def test_success_after_failure_is_credited_once_and_flagged(api, attempt):
    # given
    deliver(api, event_for(attempt, type="payment.failed"))
    # when
    first = deliver(api, event_for(attempt, reference="gw_late"))
    second = deliver(api, event_for(attempt, reference="gw_late"))
    # then
    assert first.json()["result"] == "credited"
    assert second.json()["result"] == "already_credited"
    attempt.refresh_from_db()
    assert attempt.status == "succeeded"
    assert attempt.flagged_for_review and "after the attempt was failed" in attempt.review_reason
    assert balance(attempt.wallet) == 50000 and credits(attempt) == 1
    assert_ledger_consistent()


def test_success_after_expiry_is_credited_once_and_flagged(api, attempt):
    # given
    assert payment_attempts_expire(now=timezone.now() + timedelta(days=8)) == 1
    # when
    first = deliver(api, event_for(attempt))
    second = deliver(api, event_for(attempt))
    # then
    assert first.json()["result"] == "credited"
    assert second.json()["result"] == "already_credited"
    attempt.refresh_from_db()
    assert attempt.status == "succeeded"
    assert attempt.flagged_for_review and "after the attempt was expired" in attempt.review_reason
    assert balance(attempt.wallet) == 50000 and credits(attempt) == 1
    assert_ledger_consistent()


def test_expiry_never_touches_a_succeeded_attempt(api, attempt):
    deliver(api, event_for(attempt))
    assert payment_attempts_expire(now=timezone.now() + timedelta(days=8)) == 0
    attempt.refresh_from_db()
    assert attempt.status == "succeeded"


def test_failure_after_success_moves_nothing_and_flags(api, attempt):
    # given
    deliver(api, event_for(attempt))
    # when
    response = deliver(api, event_for(attempt, type="payment.failed"))
    # then
    assert response.status_code == 200
    assert response.json()["result"] == "flagged"
    attempt.refresh_from_db()
    assert attempt.status == "succeeded"
    assert attempt.flagged_for_review and "payment.failed arrived after" in attempt.review_reason
    assert balance(attempt.wallet) == 50000 and credits(attempt) == 1
    assert_ledger_consistent()


def test_failure_after_failure_or_expiry_is_ignored(api, attempt):
    deliver(api, event_for(attempt, type="payment.failed"))
    response = deliver(api, event_for(attempt, type="payment.failed"))
    assert response.json()["result"] == "ignored"
    attempt.refresh_from_db()
    assert attempt.status == "failed" and not attempt.flagged_for_review


def test_frozen_wallet_is_still_credited_and_flagged(api, attempt):
    # given: frozen after the customer started paying
    Wallet.objects.filter(id=attempt.wallet_id).update(status=Wallet.Status.FROZEN)
    # when
    response = deliver(api, event_for(attempt))
    # then
    assert response.json()["result"] == "credited"
    attempt.refresh_from_db()
    assert attempt.flagged_for_review and "frozen" in attempt.review_reason
    assert balance(attempt.wallet) == 50000
    assert_ledger_consistent()


# --- concurrency -------------------------------------------------------------------------


def _deliver_concurrently(bodies: list[dict]) -> list[tuple[int, dict]]:
    """Each body from its own thread (its own database connection), all released at once."""
    barrier = threading.Barrier(len(bodies))
    answers: list[tuple[int, dict] | BaseException] = [None] * len(bodies)

    def worker(index: int, event: dict) -> None:
        try:
            barrier.wait(timeout=10)
            response = deliver(Client(), event)
            answers[index] = (response.status_code, response.json())
        except BaseException as exc:  # reported by the main thread below
            answers[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, body)) for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_deliveries_of_one_event_credit_once():
    # given
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=12345)
    event = event_for(attempt)
    # when
    answers = _deliver_concurrently([event] * 10)
    # then
    assert {status for status, _ in answers} == {200}
    results = sorted(body["result"] for _, body in answers)
    assert results == ["credited"] + ["duplicate"] * 9
    assert balance(wallet) == 12345
    assert credits(attempt) == 1
    assert GatewayEvent.objects.count() == 1
    assert OutboxEvent.objects.filter(type="payment.succeeded").count() == 1
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_events_for_one_payment_credit_once():
    # given: ten distinct event ids reporting the same success
    _, wallet = register_user()
    attempt = payment_attempt_create(wallet=wallet, amount=777)
    events = [event_for(attempt, reference="gw_same") for _ in range(10)]
    # when
    answers = _deliver_concurrently(events)
    # then
    assert {status for status, _ in answers} == {200}
    results = sorted(body["result"] for _, body in answers)
    assert results == ["already_credited"] * 9 + ["credited"]
    assert balance(wallet) == 777
    assert credits(attempt) == 1
    assert GatewayEvent.objects.count() == 10
    attempt.refresh_from_db()
    assert attempt.status == "succeeded" and not attempt.flagged_for_review
    assert_ledger_consistent()


# --- the signature helpers on their own ----------------------------------------------------


def test_signature_verify_returns_the_timestamp_and_takes_upper_case_hex():
    # given
    from wallets.gateway import signature_compute, signature_verify

    body = b'{"id":"evt_1"}'
    digest = signature_compute(secret="s" * 32, timestamp=1_700_000_000, body=body)
    # when
    timestamp = signature_verify(
        header=f"t=1700000000, v1={digest.upper()}",
        body=body,
        secret="s" * 32,
        tolerance_seconds=300,
        now=1_700_000_100,
    )
    # then
    assert timestamp == 1_700_000_000


@pytest.mark.parametrize(("offset", "accepted"), [(-300, True), (300, True), (-301, False), (301, False)])
def test_signature_verify_measures_the_tolerance_both_ways(offset, accepted):
    # given
    from wallets.gateway import signature_header, signature_verify
    from walletsite.errors import InvalidSignature

    body = b"{}"
    header = signature_header(secrets="k" * 32, body=body, timestamp=1_700_000_000)
    # when / then
    verify = lambda: signature_verify(  # noqa: E731
        header=header, body=body, secret="k" * 32, tolerance_seconds=300, now=1_700_000_000 - offset
    )
    if accepted:
        assert verify() == 1_700_000_000
    else:
        with pytest.raises(InvalidSignature):
            verify()
