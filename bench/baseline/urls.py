from rest_framework.routers import SimpleRouter

from bench.baseline.views import BcryptPinWalletViewSet, WalletViewSet

router = SimpleRouter(trailing_slash=False)
router.register("api/v1/wallet", WalletViewSet, basename="wallet")
router.register("bcrypt-pin/api/v1/wallet", BcryptPinWalletViewSet, basename="bcrypt-pin-wallet")

urlpatterns = router.urls
