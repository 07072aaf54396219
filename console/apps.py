from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator's console: the admin index's dashboard and the demo
    cloud. It reads and drives every other app, so nothing imports it."""

    name = "console"
    verbose_name = "Console"
