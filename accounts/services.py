"""State changes for apps, members and enrollment keys."""

from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.choices import Role
from accounts.models import App, AuditEntry, EnrollmentKey, Membership


def hash_secret(secret: str) -> str:
    # The secrets are 32 random bytes, so a plain SHA-256 is enough (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_app(*, slug: str, name: str = "", owner: AbstractBaseUser | None = None) -> App:
    with transaction.atomic():
        app = App.objects.create(slug=slug, name=name or slug)
        if owner is not None:
            Membership.objects.create(user=owner, app=app, role=Role.ADMIN)
            audit(app, owner, "app.create", "app", app.slug)
    return app


def set_member(
    app: App, user: AbstractBaseUser, role: str, *, by: AbstractBaseUser | None = None
) -> Membership:
    with transaction.atomic():
        membership, _ = Membership.objects.update_or_create(
            app=app, user=user, defaults={"role": role}
        )
        audit(app, by, "member.set", "user", str(user.pk), {"role": role})
    return membership


class MembershipError(ValueError):
    """A membership change that would leave the app unmanageable."""


def remove_member(app: App, user: AbstractBaseUser, *, by: AbstractBaseUser | None = None) -> None:
    """Take a user's role in an app away; an app always keeps at least one admin."""
    with transaction.atomic():
        # Lock the app's memberships so two admins removing each other cannot both succeed.
        memberships = list(Membership.objects.select_for_update(no_key=True).filter(app=app))
        target = next((m for m in memberships if m.user_id == user.pk), None)
        if target is None:
            return
        admins = [m for m in memberships if m.role == Role.ADMIN]
        if target.role == Role.ADMIN and len(admins) == 1:
            raise MembershipError(
                f"{user} is the last admin of {app.slug}; make someone else admin first"
            )
        target.delete()
        audit(app, by, "member.remove", "user", str(user.pk), {"username": user.get_username()})


def create_enrollment_key(
    app: App, *, label: str = "default", by: AbstractBaseUser | None = None
) -> tuple[EnrollmentKey, str]:
    """Create a key; the plain key is returned once and never stored."""
    plain = f"wek_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        key = EnrollmentKey.objects.create(
            app=app, label=label, prefix=plain[:10], key_hash=hash_secret(plain)
        )
        audit(app, by, "enrollment_key.create", "enrollment_key", str(key.pk), {"label": label})
    return key, plain


def revoke_enrollment_key(key: EnrollmentKey, *, by: AbstractBaseUser | None = None) -> None:
    with transaction.atomic():
        EnrollmentKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        audit(key.app, by, "enrollment_key.revoke", "enrollment_key", str(key.pk))


def find_enrollment_key(plain: str) -> EnrollmentKey | None:
    return (
        EnrollmentKey.objects.select_related("app")
        .filter(key_hash=hash_secret(plain), revoked_at__isnull=True)
        .first()
    )


def audit(
    app: App,
    user: AbstractBaseUser | None,
    action: str,
    target_type: str,
    target_id: str,
    detail: dict | None = None,
) -> AuditEntry:
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    return AuditEntry.objects.create(
        app=app,
        user=user,
        action=action,
        target_type=target_type,
        target_id=target_id,
        detail=detail or {},
    )


def rotate_token(user: AbstractBaseUser) -> str:
    """Replace the user's API token (one per user) and return the new key, shown once."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user).key


def revoke_token(user: AbstractBaseUser) -> None:
    Token.objects.filter(user=user).delete()
