"""State changes for tasks and their versions."""

from __future__ import annotations

import hashlib

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from accounts.models import App
from accounts.services import audit
from tasks.bundles import Bundle, validate_bundle
from tasks.models import Blob, Task, TaskVersion, VersionFile
from tasks.signing import sign
from tasks.storage import content_store
from walle_device.protocol import canonical_json


def create_task(
    app: App,
    *,
    name: str,
    scene: str = "",
    description: str = "",
    by: AbstractBaseUser | None = None,
) -> Task:
    with transaction.atomic():
        task = Task.objects.create(app=app, name=name, scene=scene, description=description)
        audit(app, by, "task.create", "task", str(task.pk), {"name": name})
    return task


def build_manifest(task: Task, number: int, bundle: Bundle, parent: TaskVersion | None) -> dict:
    return {
        "app": task.app.slug,
        "task": task.name,
        "version": number,
        "parent": parent.number if parent else None,
        "entry_point": bundle.entry_point,
        "config": bundle.config,
        "files": [
            {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for path, data in sorted(bundle.files.items())
        ],
    }


def create_version(
    task: Task,
    *,
    files: dict[str, bytes],
    entry_point: str,
    config: object,
    notes: str = "",
    by: AbstractBaseUser | None = None,
) -> TaskVersion:
    """Validate, store the files content-addressed, sign the manifest, record the version."""
    bundle = validate_bundle(files, entry_point, config)
    bundle = _convert_models(bundle)
    store = content_store()
    # Blobs first, outside the transaction: they are immutable and idempotent, and an orphan
    # blob after a crash costs disk space, never correctness.
    for data in bundle.files.values():
        store.put(data)
    with transaction.atomic():
        # Lock the task row so two uploads at once get consecutive numbers, not a conflict.
        locked = Task.objects.select_for_update().get(pk=task.pk)
        latest = locked.versions.order_by("-number").first()
        number = (locked.versions.aggregate(m=Max("number"))["m"] or 0) + 1
        manifest = build_manifest(locked, number, bundle, latest)
        payload = canonical_json(manifest)
        for entry in manifest["files"]:
            Blob.objects.get_or_create(sha256=entry["sha256"], defaults={"size": entry["size"]})
        version = TaskVersion.objects.create(
            task=locked,
            number=number,
            parent=latest,
            entry_point=bundle.entry_point,
            config=bundle.config,
            notes=notes,
            manifest=manifest,
            digest=hashlib.sha256(payload).hexdigest(),
            signature=sign(payload),
            total_size=sum(entry["size"] for entry in manifest["files"]),
            created_by=by if getattr(by, "is_authenticated", False) else None,
        )
        VersionFile.objects.bulk_create(
            [
                VersionFile(version=version, path=e["path"], blob_id=e["sha256"])
                for e in manifest["files"]
            ]
        )
        audit(
            task.app,
            by,
            "version.create",
            "task_version",
            str(version.pk),
            {"task": task.name, "number": number},
        )
    # The document devices download, written once next to the blobs: served without the
    # database (tasks/content.py) or by a static server / CDN.
    store.put_manifest(version.manifest, version.signature, version.digest)
    return version


def _convert_models(bundle: Bundle) -> Bundle:
    """Convert uploaded ONNX models with the engine, when the engine is installed."""
    from tasks.models_convert import convert_onnx_files

    return convert_onnx_files(bundle)


def signed_manifest(version: TaskVersion) -> dict:
    """The document devices download: the manifest and the release key's signature over it."""
    return {"manifest": version.manifest, "signature": version.signature, "digest": version.digest}
