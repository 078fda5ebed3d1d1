"""The base of every API viewset."""

from __future__ import annotations

from rest_framework.exceptions import MethodNotAllowed
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet


def _forget_itself(response: Response) -> None:
    # DRF's rendered_content puts the response into its own renderer_context.
    response.renderer_context.pop("response", None)


class ApiViewSet(GenericViewSet):
    """A GenericViewSet for routes mapped explicitly with `as_view({...})` (walletsite/api.py).

    - A method the route does not take answers 405 before anything authenticates: a wrong
      method is wrong whoever sends it. OPTIONS too: DRF's OPTIONS metadata describes a
      view's serializer, and these views declare theirs per action, not per view.
    - `@action(authentication_classes=..., permission_classes=..., throttle_classes=...)` is
      honoured. A router passes those to the view as init arguments; an explicit as_view does
      not.
    - Once dispatched, the view lets go of its request and response, and the rendered
      response of itself: DRF leaves the view, its request and the response pointing at one
      another (`view.response`, the handlers as_view binds onto the view, the request's
      `parser_context`, the response in its own `renderer_context`), so without this every
      request's objects, the page it answered included, would live on as cyclic garbage
      until a garbage collection that stops the whole process to free them by the hundred.
    """

    metadata_class = None

    def initial(self, request, *args, **kwargs):
        if request.method.lower() not in self.action_map:
            raise MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        # What rendering needs is on the response (renderer, media type, renderer_context);
        # nothing reads the view after dispatch.
        self.request.parser_context.clear()
        self.__dict__.clear()
        if isinstance(response, Response):
            response.add_post_render_callback(_forget_itself)
        return response

    def _action_option(self, name: str):
        # DRF sets self.action only after it has asked for the authenticators, so the action
        # is looked up from the method here.
        request = getattr(self, "request", None)
        action = getattr(self, "action", None)
        if action is None and request is not None:
            action = self.action_map.get(request.method.lower())
        handler = getattr(self, action, None) if action else None
        return getattr(handler, "kwargs", {}).get(name)

    def get_authenticators(self):
        classes = self._action_option("authentication_classes")
        return super().get_authenticators() if classes is None else [cls() for cls in classes]

    def get_permissions(self):
        classes = self._action_option("permission_classes")
        return super().get_permissions() if classes is None else [cls() for cls in classes]

    def get_throttles(self):
        classes = self._action_option("throttle_classes")
        return super().get_throttles() if classes is None else [cls() for cls in classes]
