from django.apps import AppConfig


class WalleWebConfig(AppConfig):
    name = "walle_web"
    verbose_name = "Walle"

    def ready(self) -> None:
        from walle_web import checks  # noqa: F401  (registers the settings checks)
