"""Helpers for the test suite only."""

from django.contrib.auth.hashers import BCryptSHA256PasswordHasher


class FastBCryptSHA256PasswordHasher(BCryptSHA256PasswordHasher):
    """The production hasher at bcrypt's lowest cost, so tests that create many users stay
    fast; the algorithm and the code paths are the same."""

    rounds = 4
