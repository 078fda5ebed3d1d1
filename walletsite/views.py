"""The base of every API viewset."""

from __future__ import annotations

from rest_framework.exceptions import MethodNotAllowed
from rest_framework.viewsets import GenericViewSet


class ApiViewSet(GenericViewSet):
    """A GenericViewSet that answers 405 for a method the route does not take before it
    authenticates: a wrong method is wrong whoever sends it."""

    def initial(self, request, *args, **kwargs):
        if request.method.lower() not in self.action_map and request.method != "OPTIONS":
            raise MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)
