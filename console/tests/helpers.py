"""Small helpers of the console tests: a logged-in client, an app page's URL."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def url(name: str, cast, **kwargs) -> str:
    return reverse(f"console:{name}", kwargs={"slug": cast.app.slug, **kwargs})
