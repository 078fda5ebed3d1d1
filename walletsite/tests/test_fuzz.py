"""API fuzzing: schemathesis generates requests from our own OpenAPI document for every
operation, as each role (anonymous, customer, merchant, staff), and sends them in-process to
the WSGI application on real PostgreSQL. No answer may be a 5xx, every answer must match the
documented status codes, content types and schemas, and the ledger invariants must hold
afterwards."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.tests.invariants import assert_ledger_consistent
from walletsite.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema?format=json", application)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROLES = ("anonymous", "customer", "merchant", "staff")


@pytest.fixture
def keep_test_connection():
    """The requests run inside the test's transaction: Django must not close the connection
    at the end of each request (its own test client does the same)."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def role_headers(db, keep_test_connection):
    from accounts.models import User
    from wallets.tests.factories import auth_header, register_user
    from wallets.tests.money import fund

    customer, wallet = register_user(name="Fuzz Customer")
    fund(wallet, 1_000_000)
    merchant, _ = register_user(role="merchant", business_name="Fuzz Shop")
    staff = User.objects.create_superuser(email="fuzz.admin@example.com", password="fuzz admin password")
    return {
        "anonymous": {},
        "customer": {"Authorization": auth_header(customer)["HTTP_AUTHORIZATION"]},
        "merchant": {"Authorization": auth_header(merchant)["HTTP_AUTHORIZATION"]},
        "staff": {"Authorization": auth_header(staff)["HTTP_AUTHORIZATION"]},
    }


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_as_every_role(case, role, role_headers):
    headers = dict(case.headers or {})
    headers.pop("Authorization", None)
    headers.update(role_headers[role])
    case.call_and_validate(headers=headers, checks=CHECKS)
    assert_ledger_consistent()
