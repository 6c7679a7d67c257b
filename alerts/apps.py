from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Releases announce outcomes and the rollout worker ticks; alerts listen (releases
        # never import alerts).
        from alerts import receivers  # noqa: F401
