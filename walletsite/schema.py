"""OpenAPI pieces shared by every view: the problem+json error body and a helper that declares
a route's error responses from the error catalog, so the schema lists every error a route can
answer with, under the media type it is really sent with."""

from __future__ import annotations

from drf_spectacular.drainage import set_override
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from accounts.authentication import ClaimsTokenAuthentication
from walletsite.errors import CATALOG, PROBLEM_CONTENT_TYPE


class FieldErrorOut(serializers.Serializer):
    field = serializers.CharField(help_text="Dotted path of the field; empty for the body as a whole")
    message = serializers.CharField()


class ProblemOut(serializers.Serializer):
    """RFC 9457 problem details, as walletsite.errors renders them."""

    type = serializers.CharField(help_text="urn:wallet:error:<code>")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.ChoiceField(choices=sorted(CATALOG), help_text="Stable; see docs/errors.md")
    errors = FieldErrorOut(many=True, required=False, help_text="validation_failed only: every field refused")
    retry_after = serializers.IntegerField(required=False, help_text="Seconds; also sent as Retry-After")


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    description="1-255 printable ASCII characters; a retry with the same key and body replays the first answer",
)

# Every route behind a throttle (walletsite.throttles) answers 429 rate_limited with it.
RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    required=True,
    response=[429],
    description="Seconds until the rate limit's window ends and the request may be retried",
)

# Answers any route can give, declared on every route.
ALWAYS = ("internal_error", "service_unavailable")
# What every route behind a bearer token can answer.
AUTHENTICATED = ("authentication_required", "invalid_token")


def problems(*codes: str) -> dict:
    """extend_schema `responses` entries for these error codes (plus ALWAYS), grouped by
    HTTP status."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys((*codes, *ALWAYS)):
        by_status.setdefault(CATALOG[code][0], []).append(code)
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            response=ProblemOut,
            description="; ".join(f"`{code}`: {CATALOG[code][1]}" for code in group),
        )
        for status, group in sorted(by_status.items())
    }


class AccessTokenScheme(OpenApiAuthenticationExtension):
    """Documents accounts.authentication.AccessTokenAuthentication as a bearer JWT."""

    target_class = "accounts.authentication.AccessTokenAuthentication"
    match_subclasses = True
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


# The claims-only variant (the transfer route) is the same bearer scheme, one component.
set_override(ClaimsTokenAuthentication, "suppress_collision_warning", True)
