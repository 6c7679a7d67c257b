#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import secrets
import sys

# Commands that only read the code and the migration history: they never sign, serve or store
# anything with the secret key, so they run without one being configured (a random key for
# this process alone; every other command still refuses to start without WALLE_SECRET_KEY).
KEYLESS_COMMANDS = {"makemigrations", "showmigrations", "sqlmigrate"}

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "walle_web.settings")
    if len(sys.argv) > 1 and sys.argv[1] in KEYLESS_COMMANDS:
        os.environ.setdefault("WALLE_SECRET_KEY", secrets.token_urlsafe(50))
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
