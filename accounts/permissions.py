"""One place that answers "may this user do this in this app", for pages, API and websockets."""

from __future__ import annotations

from accounts.choices import ROLE_RANK, Role
from accounts.models import App, Membership


def role_in(user, app: App) -> str | None:
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser:
        return Role.ADMIN
    membership = Membership.objects.filter(user=user, app=app).only("role").first()
    return membership.role if membership else None


def has_role(user, app: App, role: str) -> bool:
    current = role_in(user, app)
    return current is not None and ROLE_RANK[Role(current)] >= ROLE_RANK[Role(role)]


def visible_apps(user):
    if not getattr(user, "is_authenticated", False):
        return App.objects.none()
    if user.is_superuser:
        return App.objects.all()
    return App.objects.filter(memberships__user=user)
