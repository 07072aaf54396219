from django.apps import AppConfig


class NetworkingConfig(AppConfig):
    name = "networking"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from config.quotas import register_usage
        from networking.models import Network

        register_usage("network", lambda project: Network.objects.filter(project=project).count())
