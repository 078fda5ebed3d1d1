"""Routes. The JSON API lives under /api/v1 (walletsite.api); the rest are the admin,
operations endpoints, the API docs and the sandbox gateway."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("walletsite.api")),
]

handler400 = "walletsite.errors.handler400"
handler403 = "walletsite.errors.handler403"
handler404 = "walletsite.errors.handler404"
handler500 = "walletsite.errors.handler500"
