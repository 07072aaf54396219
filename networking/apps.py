from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    name = "networking"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from identity.quotas import register_usage
        from networking.models import Network, Port, Subnet

        for resource, model in (("network", Network), ("subnet", Subnet), ("port", Port)):
            register_usage(
                resource, lambda project, m=model: m.objects.filter(project=project).count()
            )
