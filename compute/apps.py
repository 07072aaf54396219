from django.apps import AppConfig
from django.db.models import Sum


class ComputeConfig(AppConfig):
    name = "compute"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from compute.models import Instance, InstanceStatus
        from identity.quotas import register_usage

        def live(project):
            return Instance.objects.filter(project=project).exclude(status=InstanceStatus.DELETED)

        register_usage("instances", lambda project: live(project).count())
        register_usage("cores", lambda p: live(p).aggregate(n=Sum("vcpus"))["n"] or 0)
        register_usage("ram", lambda p: live(p).aggregate(n=Sum("memory_mb"))["n"] or 0)
