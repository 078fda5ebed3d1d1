"""Helpers other tests build on: a registered user with their PIN and wallet (through the
real registration service, so the wallet's ledger account exists), and a bearer header."""

from __future__ import annotations

import itertools
import uuid

from accounts.models import User
from accounts.tokens import session_start
from wallets.models import Wallet
from wallets.registration import user_register

DEFAULT_PASSWORD = "correct horse battery"
DEFAULT_PIN = "1234"

_numbers = itertools.count(1)


def register_user(
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    pin: str = DEFAULT_PIN,
    role: str = "customer",
    business_name: str = "",
    name: str = "",
) -> tuple[User, Wallet]:
    """A customer (or merchant) registered as over the API: user, PIN, wallet, account.

    Emails are unique per call (a counter and a random part), so tests that register many
    users, also in threads or with --reuse-db, do not collide."""
    number = next(_numbers)
    if email is None:
        email = f"user{number}.{uuid.uuid4().hex[:8]}@example.com"
    if role == "merchant" and not business_name:
        business_name = f"Shop {number}"
    return user_register(email=email, password=password, pin=pin, name=name, role=role, business_name=business_name)


# Named like a factory_boy class because callers use it as one: WalletFactory() -> a wallet.
def WalletFactory(**kwargs) -> Wallet:
    """The wallet of a freshly registered user (see register_user for the arguments)."""
    _, wallet = register_user(**kwargs)
    return wallet


def auth_header(user: User) -> dict[str, str]:
    """Keyword arguments for Django's / DRF's test client: a bearer access token of a new
    login of `user` (no password needed: the login is opened by the token service itself)."""
    body = session_start(user=user)
    return {"HTTP_AUTHORIZATION": f"Bearer {body['access_token']}"}
