"""A URLconf for the error tests: the project's routes plus views that fail on purpose."""

from django.urls import path
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from walletsite.urls import handler400, handler403, handler404, handler500
from walletsite.urls import urlpatterns as project_urls


def django_boom(request):
    raise RuntimeError("SELECT secret FROM internals -- must not leak")


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def drf_boom(request):
    raise RuntimeError("SELECT secret FROM internals -- must not leak")


urlpatterns = [*project_urls, path("boom/django", django_boom), path("boom/drf", drf_boom)]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
