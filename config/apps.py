from django.apps import AppConfig


class ConfigConfig(AppConfig):
    """Cross-cutting plumbing: the health check's probes and beat's periodic
    runs, the admin site's base, the API schema."""

    name = "config"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from config import schema  # noqa: F401  registers the auth scheme
