from django.apps import AppConfig


class IdentityConfig(AppConfig):
    """Projects, roles, tokens and quotas: berth's small stand-in for Keystone."""

    name = "config"
    label = "identity"
    verbose_name = "Identity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from config import schema  # noqa: F401  registers the auth scheme
