from django.urls import path
from rest_framework.routers import SimpleRouter

from networking.api import views

router = SimpleRouter(trailing_slash=False)
router.register("networks", views.NetworkViewSet, basename="network")
router.register("segments", views.SegmentViewSet, basename="segment")
router.register("subnets", views.SubnetViewSet, basename="subnet")
router.register("ports", views.PortViewSet, basename="port")
router.register(
    "network-ip-availabilities", views.IpAvailabilityViewSet, basename="network-ip-availability"
)
router.register("agents", views.AgentViewSet, basename="agent")

urlpatterns = [
    path("extensions", views.ExtensionList.as_view()),
    path("extensions/<str:alias>", views.ExtensionDetail.as_view()),
    *router.urls,
]
