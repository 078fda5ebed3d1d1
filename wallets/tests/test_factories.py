import pytest

from accounts.models import Pin
from accounts.tests.factories import UserFactory
from wallets.models import Wallet
from wallets.tests.factories import WalletFactory, register_user


@pytest.mark.django_db
def test_register_user_makes_a_user_with_pin_wallet_and_account(api):
    # given / when
    user, wallet = register_user()

    # then
    assert Pin.objects.filter(user=user).exists()
    assert wallet.user_id == user.id
    assert wallet.account.balance == 0
    assert user.check_password("correct horse battery")


@pytest.mark.django_db
def test_merchant_and_wallet_factory():
    # given / when
    merchant, _ = register_user(role="merchant")
    wallet = WalletFactory()

    # then
    assert merchant.role == "merchant" and merchant.business_name
    assert wallet.handle.endswith("@wallet")


@pytest.mark.django_db
def test_user_factory_has_a_usable_password():
    # given / when
    user = UserFactory()

    # then
    assert user.check_password("correct horse battery")
    assert not Wallet.objects.filter(user=user).exists()
