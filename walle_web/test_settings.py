"""Settings of the test suite: the development defaults (WALLE_DEBUG on, so the development
secret key is accepted). pytest-django still runs the tests themselves with DEBUG off, and the
end-to-end servers the tests start run the production posture (tests/live.py)."""

import os

os.environ.setdefault("WALLE_DEBUG", "1")

from walle_web.settings import *  # noqa: F403
