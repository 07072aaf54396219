from django.apps import AppConfig


class ReservationsConfig(AppConfig):
    name = "reservations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings

        from compute import scheduler, signals
        from identity.quotas import register_usage
        from reservations.models import Lease, LeaseStatus, Subscription
        from reservations.notifications import allowed_destination
        from reservations.placement import host_liveness_changed, lease_constraints

        # A malformed allow-list entry stops every process at start rather
        # than answering 500 to the first subscription that meets it.
        for entry in settings.BERTH_WEBHOOK_ALLOWED:
            allowed_destination(entry)

        scheduler.constraint_providers.append(lease_constraints)
        signals.host_liveness.connect(host_liveness_changed, dispatch_uid="reservations")
        register_usage(
            "leases",
            lambda project: (
                Lease.objects.filter(project=project).exclude(status=LeaseStatus.TERMINATED).count()
            ),
        )
        register_usage(
            "subscriptions", lambda project: Subscription.objects.filter(project=project).count()
        )
