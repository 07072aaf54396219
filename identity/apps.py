from django.apps import AppConfig


class IdentityConfig(AppConfig):
    """Projects, users, roles, tokens, application credentials and quota
    overrides: the Keystone v3 subset clients sign in with."""

    name = "identity"
    verbose_name = "Identity"
    default_auto_field = "django.db.models.BigAutoField"
