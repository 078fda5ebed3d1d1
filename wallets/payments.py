"""Merchant payments and their refunds.

A payment is one ledger transaction of type payment: the customer's debit, the merchant's
credit net of the fee, and the fee credited to the system `fees` account (no fee leg when the
fee is 0). Cashback, when a campaign applies, is a second ledger transaction in the same
database transaction (wallets.cashback).

Fee rounding: fee = floor(amount * fee_bps / 10000), in integers; the merchant receives the
rest. A refund gives back the fee in proportion from the fees account, computed on the
payment's cumulative refunded total: after a refund, the fee given back so far is
floor(fee * refunded / amount), and the whole fee once the payment is fully refunded. So
partial refunds never give back more fee than was charged, and a full refund (in one or
many parts) returns exactly the whole fee. The merchant pays the refund less that fee share.

Cashback on a refund: taken back in the same proportion (wallets.cashback.cashback_to_reverse)
as its own ledger transaction of type cashback (customer -> pool), posted right after the
refund credited the customer. The refund credits at least as much as the cashback it takes
back (cashback never exceeds the payment), so the customer always holds it, even if they
spent the cashback itself long ago; the reversal is still capped at the customer's available
balance, so it can never drive a balance negative, and what it could not take back stays
owed and is taken back by the payment's next refund (the totals are cumulative).

Both services run inside the caller's database transaction: the Idempotency-Key record of
wallets.money commits with the money (a replay returns the stored answer; it never moves
money again nor answers with a failure for a refund that succeeded).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from ledger.audit import audit_record
from ledger.models import Account
from ledger.outbox import outbox_emit
from ledger.posting import (
    Leg,
    Posted,
    PostingCommand,
    Rejected,
    accounts_lock,
    system_account,
    transactions_post,
)
from wallets.cashback import campaign_lock_best, cashback_grant, cashback_to_reverse
from wallets.history import history_item
from wallets.limits import balance_ceiling_check, outgoing_limits_check
from wallets.models import CashbackGrant, MerchantProfile, Payment, Refund, Wallet
from wallets.services import wallet_resolve
from wallets.transfers import wallets_must_be_active
from walletsite.errors import (
    MerchantNotFound,
    RefundExceedsPayment,
    SameWallet,
    TransactionNotFound,
    WalletNotFound,
)


def merchant_resolve(*, ref: str) -> Wallet:
    """A merchant's wallet by handle or id; 404 merchant_not_found for an unknown wallet and
    for a wallet whose owner is not a merchant alike."""
    try:
        wallet = wallet_resolve(ref=ref)
    except WalletNotFound:
        raise MerchantNotFound(f"No merchant has the handle or id {ref[:80]!r}") from None
    if wallet.user.role != "merchant":
        raise MerchantNotFound(f"No merchant has the handle or id {ref[:80]!r}")
    return wallet


def merchant_fee_bps(*, merchant: Wallet) -> int:
    """The merchant's own fee, or the setting WALLET["MERCHANT_FEE_BPS"]."""
    own = MerchantProfile.objects.filter(wallet_id=merchant.id).values_list("fee_bps", flat=True).first()
    return own if own is not None else settings.WALLET["MERCHANT_FEE_BPS"]


def merchant_fee_set(*, merchant: Wallet, fee_bps: int | None, actor=None) -> MerchantProfile:
    """Give a merchant a fee of its own (None: back to the default). Applies to payments from
    now on; past payments keep the fee they were charged. Audited."""
    if fee_bps is not None and not 0 <= fee_bps <= 10_000:
        raise ValueError("a fee is 0-10000 basis points")
    if merchant.user.role != "merchant":
        raise ValueError("only merchants have a fee")
    # Not a money movement, so not a durable block: the admin's change form already runs in
    # a transaction of its own, which this one joins.
    with transaction.atomic():
        profile, _ = MerchantProfile.objects.update_or_create(wallet=merchant, defaults={"fee_bps": fee_bps})
        audit_record(
            actor=actor,
            actor_label=getattr(actor, "email", None) or "system",
            action="merchant.fee_set",
            target=f"wallet:{merchant.id}",
            reason=f"fee set to {fee_bps} bps" if fee_bps is not None else "fee set to the default",
            data={"fee_bps": fee_bps},
        )
    return profile


def fee_for(*, amount: int, fee_bps: int) -> int:
    """floor(amount * fee_bps / 10000): integers only, rounded in the merchant's favour."""
    return amount * fee_bps // 10_000


def _legs(*pairs: tuple[int, int]) -> tuple[Leg, ...]:
    """Legs without the zero ones (a fee of 0, a merchant keeping nothing at a 100% fee)."""
    return tuple(Leg(account_id, amount) for account_id, amount in pairs if amount != 0)


@dataclass(frozen=True)
class PaymentResult:
    payment: Payment
    posted: Posted
    customer: Wallet
    merchant: Wallet
    cashback: CashbackGrant | None
    # The customer's posted balance after the payment and its cashback.
    balance: int


def payment_create(*, customer: Wallet, merchant_ref: str, amount: int, order_id: str = "") -> PaymentResult:
    """Pay a merchant `amount` from the customer's wallet, with the merchant's fee and any
    cashback, inside the caller's database transaction.

    Lock order: the best running cashback campaign's row (if any), then the ledger accounts
    (customer, merchant, fees and, with a campaign, the cashback pool) in ascending id."""
    merchant = merchant_resolve(ref=merchant_ref)
    if merchant.id == customer.id:
        raise SameWallet("A merchant cannot pay itself")
    fee_bps = merchant_fee_bps(merchant=merchant)
    fee = fee_for(amount=amount, fee_bps=fee_bps)
    fees = system_account("fees")

    campaign = campaign_lock_best(merchant=merchant)
    pool = system_account("cashback_pool") if campaign is not None else None
    account_ids = [customer.account_id, merchant.account_id, fees.id] + ([pool.id] if pool else [])
    accounts = accounts_lock(account_ids=account_ids)

    def check(locked: Mapping[int, Account]) -> None:
        wallets_must_be_active(customer.id, merchant.id)
        outgoing_limits_check(wallet=customer, amount=amount, accounts=locked)

    (result,) = transactions_post(
        commands=[
            PostingCommand(
                type="payment",
                legs=_legs((customer.account_id, -amount), (merchant.account_id, amount - fee), (fees.id, fee)),
                note=f"Order {order_id}" if order_id else "",
                reference=f"merchant:{merchant.id}",
                check=check,
            )
        ],
        accounts=accounts,
    )
    if isinstance(result, Rejected):
        raise result.error
    payment = Payment.objects.create(
        transaction=result.transaction,
        customer_wallet=customer,
        merchant_wallet=merchant,
        amount=amount,
        currency=customer.currency,
        fee=fee,
        fee_bps=fee_bps,
        order_id=order_id,
    )
    outbox_emit(
        type="payment.received",
        payload={
            "transaction_id": str(result.transaction.id),
            "wallet_ids": [str(customer.id), str(merchant.id)],
            "amount": amount,
            "currency": payment.currency,
            "payment_id": str(payment.id),
            "merchant_wallet_id": str(merchant.id),
            "customer_wallet_id": str(customer.id),
            "fee": fee,
            "order_id": order_id or None,
        },
    )
    grant = None
    if campaign is not None:
        grant = cashback_grant(campaign=campaign, payment=payment, customer=customer, pool=pool, accounts=accounts)
    return PaymentResult(
        payment=payment,
        posted=result,
        customer=customer,
        merchant=merchant,
        cashback=grant,
        balance=accounts[customer.account_id].balance,
    )


def payment_response(*, result: PaymentResult) -> dict:
    """The 201 body of POST /wallet/pay: the customer's history item of the payment, the
    balance after it (and its cashback), and the cashback if any."""
    entry = result.posted.entry_for(result.customer.account_id)
    entry.transaction = result.posted.transaction
    entry.counterparty_account_id = result.merchant.account_id
    body = {
        "transaction": history_item(
            entry, currency=result.customer.currency, parties={result.merchant.account_id: result.merchant}
        ),
        "balance": result.balance,
        "payment_id": str(result.payment.id),
        "fee": result.payment.fee,
    }
    if result.cashback is not None:
        body["cashback"] = {
            "amount": result.cashback.amount,
            "campaign_id": str(result.cashback.campaign_id),
            "transaction_id": str(result.cashback.transaction_id),
        }
    return body


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    payment: Payment
    posted: Posted
    merchant: Wallet
    customer: Wallet
    # The merchant's posted balance after the refund.
    balance: int


def _payment_lock(*, merchant: Wallet, transaction_id) -> Payment:
    try:
        txn_id = uuid.UUID(str(transaction_id))
    except ValueError:
        raise TransactionNotFound("No payment to you has this transaction id") from None
    # Another merchant's payment does not exist, as far as this merchant can tell.
    payment = (
        Payment.objects.select_for_update(of=("self",))
        .select_related("customer_wallet__user")
        .filter(transaction_id=txn_id, merchant_wallet_id=merchant.id)
        .first()
    )
    if payment is None:
        raise TransactionNotFound("No payment to you has this transaction id")
    return payment


def payment_refund(*, merchant: Wallet, transaction_id, amount: int | None = None, reason: str = "") -> RefundResult:
    """Refund all (amount None: what is left) or part of a payment to `merchant`, inside the
    caller's database transaction.

    Lock order: the payment row first (so refunds of one payment queue, and together never
    exceed it), then the ledger accounts (merchant, customer, fees, cashback pool) ascending."""
    payment = _payment_lock(merchant=merchant, transaction_id=transaction_id)
    customer = payment.customer_wallet
    refundable = payment.refundable
    amount = refundable if amount is None else amount
    if amount <= 0 or amount > refundable:
        raise RefundExceedsPayment(
            f"At most {refundable} of this payment's {payment.amount} can still be refunded", refundable=refundable
        )
    refunded_after = payment.refunded + amount
    fee_back_total = payment.fee if refunded_after == payment.amount else payment.fee * refunded_after // payment.amount
    fee_back = fee_back_total - payment.fee_refunded
    # No lock of its own: only refunds of this payment change the grant's `reversed`, and
    # they queue on the payment row locked above.
    grant = CashbackGrant.objects.filter(payment=payment).first()

    # Only the accounts this refund moves money on are locked: the fees and pool accounts
    # are shared by every merchant, so a refund without a fee or cashback share leaves them be.
    fees = system_account("fees")
    pool = system_account("cashback_pool") if grant is not None else None
    account_ids = (
        [merchant.account_id, customer.account_id] + ([fees.id] if fee_back else []) + ([pool.id] if pool else [])
    )
    accounts = accounts_lock(account_ids=account_ids)

    def check(locked: Mapping[int, Account]) -> None:
        wallets_must_be_active(merchant.id, customer.id)
        balance_ceiling_check(wallet=customer, amount=amount, accounts=locked)

    (result,) = transactions_post(
        commands=[
            PostingCommand(
                type="refund",
                legs=_legs(
                    (merchant.account_id, -(amount - fee_back)), (fees.id, -fee_back), (customer.account_id, amount)
                ),
                note=reason,
                reference=f"payment:{payment.id}",
                check=check,
            )
        ],
        accounts=accounts,
    )
    if isinstance(result, Rejected):
        raise result.error

    refund = Refund(
        payment=payment, transaction=result.transaction, amount=amount, fee_refunded=fee_back, reason=reason
    )
    if grant is not None:
        _cashback_reverse(
            grant=grant, payment=payment, refund=refund, refunded_after=refunded_after, pool=pool, accounts=accounts
        )
    refund.save()
    payment.refunded = refunded_after
    payment.fee_refunded = fee_back_total
    payment.save(update_fields=["refunded", "fee_refunded"])
    outbox_emit(
        type="refund.created",
        payload={
            "transaction_id": str(result.transaction.id),
            "wallet_ids": [str(merchant.id), str(customer.id)],
            "amount": amount,
            "currency": payment.currency,
            "refund_id": str(refund.id),
            "payment_id": str(payment.id),
        },
    )
    return RefundResult(
        refund=refund,
        payment=payment,
        posted=result,
        merchant=merchant,
        customer=customer,
        balance=accounts[merchant.account_id].balance,
    )


def _cashback_reverse(
    *,
    grant: CashbackGrant,
    payment: Payment,
    refund: Refund,
    refunded_after: int,
    pool: Account,
    accounts: Mapping[int, Account],
) -> None:
    """Take back the refunded share of the payment's cashback (customer -> pool), as far as
    the customer's available balance allows (see the module docstring)."""
    customer_account = accounts[payment.customer_wallet.account_id]
    owed = cashback_to_reverse(
        payment_amount=payment.amount,
        granted=grant.amount,
        reversed_so_far=grant.reversed,
        refunded_after=refunded_after,
    )
    amount = min(owed, customer_account.balance - customer_account.held_balance)
    if amount <= 0:
        return
    (result,) = transactions_post(
        commands=[
            PostingCommand(
                type="cashback",
                legs=(Leg(customer_account.id, -amount), Leg(pool.id, amount)),
                note="Cashback reversed: payment refunded",
                reference=f"refund:{refund.id}",
            )
        ],
        accounts=accounts,
    )
    if isinstance(result, Rejected):
        # Only the ledger's own rules can refuse this (the amount is within the customer's
        # available balance): leave it owed to the next refund rather than fail the refund.
        return
    grant.reversed += amount
    grant.save(update_fields=["reversed"])
    refund.cashback_reversed = amount
    refund.cashback_transaction = result.transaction
    outbox_emit(
        type="cashback.reversed",
        payload={
            "transaction_id": str(result.transaction.id),
            "wallet_ids": [str(payment.customer_wallet_id)],
            "amount": amount,
            "currency": payment.currency,
            "campaign_id": str(grant.campaign_id),
            "payment_id": str(payment.id),
            "refund_id": str(refund.id),
        },
    )


def refund_response(*, result: RefundResult) -> dict:
    """The 201 body of a refund: the refund, the payment's totals after it, and the
    merchant's history item and balance."""
    payment = result.payment
    return {
        "refund_id": str(result.refund.id),
        "amount": result.refund.amount,
        "fee_refunded": result.refund.fee_refunded,
        "cashback_reversed": result.refund.cashback_reversed,
        "reason": result.refund.reason,
        "payment": payment_summary(payment=payment),
        "transaction": _merchant_item(result=result),
        "balance": result.balance,
    }


def _merchant_item(*, result: RefundResult) -> dict | None:
    """The merchant's history item of the refund; None when the merchant paid no part of it
    (a payment charged a 100% fee is refunded from the fees account alone)."""
    entry = next((e for e in result.posted.entries if e.account_id == result.merchant.account_id), None)
    if entry is None:
        return None
    entry.transaction = result.posted.transaction
    entry.counterparty_account_id = result.customer.account_id
    return history_item(entry, currency=result.merchant.currency, parties={result.customer.account_id: result.customer})


def payment_summary(*, payment: Payment) -> dict:
    return {
        "id": str(payment.id),
        "transaction_id": str(payment.transaction_id),
        "amount": payment.amount,
        "currency": payment.currency,
        "fee": payment.fee,
        "refunded_total": payment.refunded,
        "refundable": payment.refundable,
        "fee_refunded": payment.fee_refunded,
        "order_id": payment.order_id or None,
    }
