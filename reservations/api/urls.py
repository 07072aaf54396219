from rest_framework.routers import SimpleRouter

from reservations.api import views

router = SimpleRouter(trailing_slash=False)
router.register("leases", views.LeaseViewSet, basename="lease")
router.register("os-hosts", views.HostViewSet, basename="os-host")
router.register("notifications", views.NotificationViewSet, basename="notification")
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")

urlpatterns = router.urls
