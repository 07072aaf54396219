from rest_framework.routers import SimpleRouter

from networking.api.views import NetworkViewSet

router = SimpleRouter(trailing_slash=False)
router.register("networks", NetworkViewSet, basename="network")

urlpatterns = router.urls
