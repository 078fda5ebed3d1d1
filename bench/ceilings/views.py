"""Each view echoes the X-Request-Id it is sent (one header read), so the load generator can
tell which request an answer belongs to (bench/lua/common.lua); nothing else."""

from __future__ import annotations

from django.http import JsonResponse
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.authentication import AccessTokenAuthentication


def _echo(request, response):
    response["X-Request-Id"] = request.META.get("HTTP_X_REQUEST_ID", "")
    return response


def bare(request):
    """A plain Django view: routing and a small JSON answer."""
    return _echo(request, JsonResponse({"ok": True}))


class DrfJwtView(APIView):
    """DRF with simplejwt's default authentication: the signature check and one query for the
    user, as the baseline pays on every request; no write."""

    authentication_classes = [JWTAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return _echo(request, Response({"user": str(request.user.pk)}))


class DrfServiceAuthView(DrfJwtView):
    """The same with the service's own authentication (accounts.authentication: the user, its
    wallet and the token family's revocation in one query)."""

    authentication_classes = [AccessTokenAuthentication]
