from django.apps import AppConfig


class WalleWebConfig(AppConfig):
    name = "walle_web"
    verbose_name = "Walle"

    def ready(self) -> None:
        from walle_web import checks  # noqa: F401  (registers the settings checks)

        stop_twisted_form_parsing()


def stop_twisted_form_parsing() -> None:
    """Keep daphne's HTTP layer (twisted) from parsing multipart bodies itself.

    twisted.web parses every multipart POST into memory with the `email` package, on the
    reactor thread, before daphne hands the body to Django (which parses it again, streaming,
    with our limits): a 100 MB upload cost over 1 GB and stalled every other request, and a
    malformed body got an empty 400 from twisted instead of Walle's JSON error. Daphne does
    not expose twisted's switch, so it is set on each request object.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # not served by daphne
        return
    if getattr(WebRequest, "_walle_no_form_parsing", False):
        return
    original = WebRequest.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__
    WebRequest._walle_no_form_parsing = True
