"""Routes. The JSON API lives under /api/v1 (walletsite.api); the rest are the admin,
operations endpoints, the API docs and the sandbox gateway."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from walletsite import ops

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("walletsite.api")),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics_view, name="metrics"),
    # The reference needs no token: authentication_classes=[] so that a stale bearer
    # token in the browser cannot turn the docs into a 401. The split view serves Swagger
    # UI's init script from /api/docs?script rather than inline, as the page's
    # Content-Security-Policy (walletsite.middleware) wants.
    path("api/schema", ops.SchemaView.as_view(), name="schema"),
    path(
        "api/docs",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[AllowAny]
        ),
        name="docs",
    ),
    path("static/<path:path>", ops.static, name="static"),
]

# The sandbox gateway exists only in sandbox mode: with GATEWAY_SANDBOX off its routes are
# not there at all (404), so no production request can fake a payment.
if settings.WALLET["GATEWAY_SANDBOX"]:
    urlpatterns.append(path("sandbox/", include("wallets.sandbox")))
    # The sandbox bank (payout API under /sandbox/bank, /sandbox/payouts/{id}/complete).
    urlpatterns.append(path("sandbox/", include("wallets.sandbox_bank")))

handler400 = "walletsite.errors.handler400"
handler403 = "walletsite.errors.handler403"
handler404 = "walletsite.errors.handler404"
handler500 = "walletsite.errors.handler500"
