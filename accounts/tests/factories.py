"""Factories for accounts. Users made here have no wallet and no PIN: for a customer or
merchant with both, use wallets.tests.factories.register_user."""

from __future__ import annotations

import factory

from accounts.models import User

DEFAULT_PASSWORD = "correct horse battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Sequence(lambda n: f"User {n}")
    role = User.Role.CUSTOMER
    password = factory.django.Password(DEFAULT_PASSWORD)


class StaffFactory(UserFactory):
    email = factory.Sequence(lambda n: f"staff{n}@example.com")
    is_staff = True
