from rest_framework.routers import SimpleRouter

from compute.api import views

router = SimpleRouter(trailing_slash=False)
router.register("flavors", views.FlavorViewSet, basename="flavor")
router.register("servers", views.ServerViewSet, basename="server")
router.register("os-hypervisors", views.HypervisorViewSet, basename="hypervisor")
router.register("os-services", views.ServiceViewSet, basename="service")
router.register("os-host-reports", views.HostReportViewSet, basename="host-report")

urlpatterns = router.urls
