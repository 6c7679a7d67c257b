"""Create (idempotently) an admin user, an app, an API token and a fresh enrollment key."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from accounts import services
from accounts.choices import Role
from accounts.models import App


class Command(BaseCommand):
    help = "Create an admin user, an app, an API token and an enrollment key; print them as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--app", default="shop-android")
        parser.add_argument("--app-name", default="Shop (Android)")
        parser.add_argument("--user", default="admin")
        parser.add_argument("--password", default="walle-admin")

    def handle(self, *args, **opts):
        User = get_user_model()
        user, created = User.objects.get_or_create(
            username=opts["user"], defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(opts["password"])
            user.save()
        app = App.objects.filter(slug=opts["app"]).first() or services.create_app(
            slug=opts["app"], name=opts["app_name"], owner=user
        )
        services.set_member(app, user, Role.ADMIN, by=user)
        token, _ = Token.objects.get_or_create(user=user)
        _, enroll_key = services.create_enrollment_key(app, label="bootstrap", by=user)
        self.stdout.write(
            json.dumps(
                {
                    "app": app.slug,
                    "user": user.username,
                    # Said again on every run while it is still the one bootstrap set.
                    "password": opts["password"]
                    if created or user.check_password(opts["password"])
                    else None,
                    "token": token.key,
                    "enroll_key": enroll_key,
                }
            )
        )
