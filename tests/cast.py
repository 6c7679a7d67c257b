"""Builders for the test cast (`make_*` helpers, no factory library)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts import services as accounts
from accounts.choices import Role
from accounts.models import App
from devices import services as devices
from devices.models import Device
from tasks import services as tasks
from tasks.models import Task, TaskVersion

HELLO_TASK = (
    b"def run(ctx):\n    ctx.upload({'hello': ctx.device.get('model', '?')})\n    return 42\n"
)


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(
        username=username, password="pw-" + username, **extra
    )


def make_device(enroll_key: str, **attrs) -> tuple[Device, str]:
    defaults = {
        "app_version": "10.0.1",
        "os": "android",
        "os_version": "14",
        "model": "Pixel 8",
        "region": "cn-east",
        "tags": [],
    }
    return devices.enroll_device(enroll_key, defaults | attrs)


def make_version(
    task: Task, source: bytes = HELLO_TASK, config: dict | None = None, **files: bytes
) -> TaskVersion:
    return tasks.create_version(
        task,
        files={"main.py": source, **{k.replace("__", "."): v for k, v in files.items()}},
        entry_point="main.py",
        config=config or {},
    )


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@dataclass
class Cast:
    app: App
    other_app: App
    admin: object
    operator: object
    viewer: object
    outsider: object
    enroll_key: str
    other_enroll_key: str
    task: Task
    version: TaskVersion
    devices: list[Device] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, who: str) -> APIClient:
        return client_for(getattr(self, who))


def make_cast(fleet: int = 4) -> Cast:
    admin = make_user("ada")
    operator = make_user("otto")
    viewer = make_user("vera")
    outsider = make_user("oscar")
    app = accounts.create_app(slug="shop-android", name="Shop", owner=admin)
    other = accounts.create_app(slug="maps-ios", name="Maps", owner=outsider)
    accounts.set_member(app, operator, Role.OPERATOR)
    accounts.set_member(app, viewer, Role.VIEWER)
    _, key = accounts.create_enrollment_key(app)
    _, other_key = accounts.create_enrollment_key(other)
    task = tasks.create_task(app, name="item-features", by=operator)
    version = make_version(task)
    cast = Cast(
        app=app,
        other_app=other,
        admin=admin,
        operator=operator,
        viewer=viewer,
        outsider=outsider,
        enroll_key=key,
        other_enroll_key=other_key,
        task=task,
        version=version,
    )
    models = ["Pixel 8", "Galaxy S24", "iPhone 15", "Moto G84"]
    for i in range(fleet):
        device, token = make_device(key, model=models[i % len(models)])
        cast.devices.append(device)
        cast.tokens[device.uid] = token
    return cast
