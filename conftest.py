"""Fixtures shared by every app's tests."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # bcrypt at cost 12 takes ~250 ms; the tests create hundreds of users. Production keeps
    # Django's BCryptSHA256PasswordHasher at its default cost.
    settings.PASSWORD_HASHERS = ["walletsite.testing.FastBCryptSHA256PasswordHasher"]


@pytest.fixture
def api() -> APIClient:
    return APIClient()
