from django.urls import path

from bench.ceilings.views import DrfJwtView, DrfServiceAuthView, bare

urlpatterns = [
    path("ceiling/bare", bare),
    path("ceiling/drf-jwt", DrfJwtView.as_view()),
    path("ceiling/drf-service-auth", DrfServiceAuthView.as_view()),
]
