"""State changes for tasks and their versions."""

from __future__ import annotations

import hashlib

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from accounts.models import App
from accounts.services import audit
from tasks.bundles import BundleError, check_sizes
from tasks.isolation import Source, checked_upload
from tasks.isolation import limits as isolation_limits
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


def build_manifest(
    task: Task,
    number: int,
    entry_point: str,
    config: dict,
    entries: list[dict],
    parent: TaskVersion | None,
) -> dict:
    return {
        "app": task.app.slug,
        "task": task.name,
        "version": number,
        "parent": parent.number if parent else None,
        "entry_point": entry_point,
        "config": config,
        "files": sorted(entries, key=lambda e: e["path"]),
    }


def create_version(
    task: Task,
    *,
    files: dict[str, Source] | None = None,
    bundle: Source | None = None,
    entry_point: str = "",
    config: dict | None = None,
    notes: str = "",
    by: AbstractBaseUser | None = None,
) -> TaskVersion:
    """Check (in a limited worker process), store content-addressed, sign, record the version.

    `files` maps bundle paths to bytes, files or file objects; or `bundle` is a .zip that may
    carry walle.json. An empty entry point, a None config and empty notes are taken from
    walle.json (or main.py / {} / ""). Raises BundleError with what to fix.
    """
    with checked_upload(
        files=files, bundle=bundle, entry_point=entry_point, config=config, notes=notes
    ) as checked:
        # Limits again on what conversion produced: a tiny ONNX file can expand enormously.
        sizes = {path: p.stat().st_size for path, p in checked.files.items()}
        if problems := check_sizes(sizes, isolation_limits()):
            raise BundleError({"files": [f"after model conversion: {p}" for p in problems]})
        store = content_store()
        # Blobs first, outside the transaction: they are immutable and idempotent, and an
        # orphan blob after a crash costs disk space, never correctness.
        entries = []
        for path, source in checked.files.items():
            sha, size = store.put_file(source)
            entries.append({"path": path, "sha256": sha, "size": size})
        entry_point, config, notes = checked.entry_point, checked.config, checked.notes
    with transaction.atomic():
        # Lock the task row so two uploads at once get consecutive numbers, not a conflict.
        locked = Task.objects.select_for_update(no_key=True).get(pk=task.pk)
        latest = locked.versions.order_by("-number").first()
        number = (locked.versions.aggregate(m=Max("number"))["m"] or 0) + 1
        manifest = build_manifest(locked, number, entry_point, config, entries, latest)
        payload = canonical_json(manifest)
        for entry in manifest["files"]:
            Blob.objects.get_or_create(sha256=entry["sha256"], defaults={"size": entry["size"]})
        version = TaskVersion.objects.create(
            task=locked,
            number=number,
            parent=latest,
            entry_point=entry_point,
            config=config,
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


def signed_manifest(version: TaskVersion) -> dict:
    """The document devices download: the manifest and the release key's signature over it."""
    return {"manifest": version.manifest, "signature": version.signature, "digest": version.digest}
