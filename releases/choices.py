from __future__ import annotations

from django.db import models


class ReleaseState(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"
    ROLLED_BACK = "rolled_back", "Rolled back"


# States in which a release still hands its version to devices (desired state).
ACTIVE_RELEASE_STATES = (ReleaseState.RUNNING, ReleaseState.PAUSED, ReleaseState.COMPLETED)


class DeploymentState(models.TextChoices):
    PENDING = "pending", "Pending"
    NOTIFIED = "notified", "Notified"
    DOWNLOADING = "downloading", "Downloading"
    INSTALLED = "installed", "Installed"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    ROLLED_BACK = "rolled_back", "Rolled back"


FINAL_DEPLOYMENT_STATES = (
    DeploymentState.SUCCEEDED,
    DeploymentState.FAILED,
    DeploymentState.TIMED_OUT,
    DeploymentState.ROLLED_BACK,
)

# Order of progress: a report may only move a deployment forward, so a late or duplicated
# report (e.g. "downloading" arriving after "succeeded") never moves it back.
DEPLOYMENT_ORDER = {
    DeploymentState.PENDING: 0,
    DeploymentState.NOTIFIED: 1,
    DeploymentState.DOWNLOADING: 2,
    DeploymentState.INSTALLED: 3,
    DeploymentState.SUCCEEDED: 4,
    DeploymentState.FAILED: 4,
    DeploymentState.TIMED_OUT: 4,
    DeploymentState.ROLLED_BACK: 5,
}


class ErrorAction(models.TextChoices):
    PAUSE = "pause", "Pause the release"
    ROLLBACK = "rollback", "Roll back to the previous version"


class RunningState(models.TextChoices):
    """How a device runs the version its reports say it runs."""

    ACTIVATED = "activated", "Activated"  # installed, its first run not reported yet
    SUCCEEDED = "succeeded", "Running"  # activated and ran fine
    FAILED = "failed", "Failing"  # activated, but its run failed
    ROLLED_BACK = "rolled_back", "Rolled back"  # switched back to this version by a rollback


class ReleaseEvent(models.TextChoices):
    """Outcomes of a release that people subscribe to (alerts); see releases/events.py."""

    PAUSED_BY_GATE = "release.paused_by_gate", "Paused by a gate"
    FAILED = "release.failed", "Failed (rolled back or aborted)"
    TIMED_OUT = "release.timed_out", "Devices timed out"
    COMPLETED = "release.completed", "Completed"
