"""The OpenAPI document describes the auth routes completely: body, answer, and every error
the routes above test for, as problem+json."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

ROUTES = {
    ("/api/v1/auth/register", "post"): ("201", {"400", "409", "413", "415"}),
    ("/api/v1/auth/login", "post"): ("200", {"400", "401", "413", "415"}),
    ("/api/v1/auth/refresh", "post"): ("200", {"400", "401", "413", "415"}),
    ("/api/v1/auth/logout", "post"): ("204", {"400", "401", "413", "415"}),
    ("/api/v1/me", "get"): ("200", {"401"}),
}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.mark.parametrize(("path", "method"), sorted(ROUTES))
def test_auth_route_is_fully_described(schema, path, method):
    # given
    success, errors = ROUTES[(path, method)]

    # when
    operation = schema["paths"][path][method]

    # then
    responses = operation["responses"]
    assert success in responses
    if success != "204":
        assert "application/json" in responses[success]["content"]
    for status in errors | {"500"}:
        assert "application/problem+json" in responses[status]["content"], status
    if method == "post":
        assert "application/json" in operation["requestBody"]["content"]


def test_only_logout_and_me_need_a_bearer_token(schema):
    # when
    secured = {(p, m) for (p, m) in ROUTES if schema["paths"][p][m].get("security")}

    # then
    assert secured == {("/api/v1/auth/logout", "post"), ("/api/v1/me", "get")}


def test_register_refuses_admin_in_the_schema_too(schema):
    # when
    roles = schema["components"]["schemas"]["RoleEnum"]["enum"]

    # then
    assert roles == ["customer", "merchant"]
