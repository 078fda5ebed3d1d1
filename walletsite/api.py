"""The /api/v1 router: every JSON API route, registered from the apps' viewsets."""

from rest_framework.routers import SimpleRouter

router = SimpleRouter(trailing_slash=False)

urlpatterns = router.urls
