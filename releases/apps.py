from django.apps import AppConfig


class ReleasesConfig(AppConfig):
    name = "releases"
    verbose_name = "Releases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Releases build on devices, never the other way: the device side exposes hooks
        # (the ingest writer's handlers, the release-changed callback) and releases fill them.
        from devices import ingest, push
        from releases import desired, reports

        ingest.register("hello", desired.ingest_hello)
        ingest.register("report", reports.ingest_report)
        push.on_release_changed(desired.CACHE.invalidate)
