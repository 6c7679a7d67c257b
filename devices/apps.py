from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "Fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from devices import ingest, services

        ingest.register("enroll", services.ingest_enroll)
        ingest.register("auth", services.ingest_auth)
        ingest.register("connect", services.ingest_connect)
        ingest.register("hello", services.ingest_hello)
        ingest.register("run_stats", services.ingest_run_stats)
        ingest.register("upload", services.ingest_upload)
        ingest.register("disconnect", services.ingest_disconnect)
