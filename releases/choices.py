"""The release vocabularies and the release state machine: which operator action is allowed
in which state, what a step of the rollout worker did, and the groups of deployment states
that services, monitoring, the console and the dashboard's JavaScript all read from here."""

from __future__ import annotations

from enum import StrEnum

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
# States in which the rollout is under way: the worker evaluates it, an operator can steer it.
ROLLING_OUT_STATES = (ReleaseState.RUNNING, ReleaseState.PAUSED)


class ReleaseAction(models.TextChoices):
    """What an operator can do to a release (a service verb, a REST action, a console button)."""

    START = "start", "Start"
    PAUSE = "pause", "Pause"
    RESUME = "resume", "Resume"
    ADVANCE = "advance", "Advance"
    ABORT = "abort", "Abort"
    ROLLBACK = "rollback", "Roll back"


# The release state machine: the actions allowed in each state. The services' guards, the
# console's buttons and the dashboard's JavaScript (through json_script) all read this table.
ALLOWED_ACTIONS: dict[str, tuple[ReleaseAction, ...]] = {
    ReleaseState.DRAFT: (ReleaseAction.START, ReleaseAction.ABORT),
    ReleaseState.RUNNING: (
        ReleaseAction.PAUSE,
        ReleaseAction.ADVANCE,
        ReleaseAction.ABORT,
        ReleaseAction.ROLLBACK,
    ),
    ReleaseState.PAUSED: (
        ReleaseAction.RESUME,
        ReleaseAction.ADVANCE,
        ReleaseAction.ABORT,
        ReleaseAction.ROLLBACK,
    ),
    ReleaseState.COMPLETED: (ReleaseAction.ROLLBACK,),
    ReleaseState.ABORTED: (ReleaseAction.ROLLBACK,),
    ReleaseState.ROLLED_BACK: (),
}


def states_allowing(action: ReleaseAction) -> tuple[ReleaseState, ...]:
    """The release states in which `action` is allowed (read from ALLOWED_ACTIONS)."""
    return tuple(
        ReleaseState(state) for state, actions in ALLOWED_ACTIONS.items() if action in actions
    )


class Step(StrEnum):
    """What one rollout step (`evaluate_release`) did to a release."""

    GONE = "gone"  # the release was deleted
    STARTED = "started"  # a scheduled draft started
    IDLE = "idle"  # not rolling out: nothing to do
    TIMEOUTS = "timeouts"  # paused, but devices in flight timed out
    PAUSED = "paused"  # paused (by an operator, or by a gate just now)
    ROLLED_BACK = "rolled_back"  # a gate tripped and rolled the release back
    ADVANCED = "advanced"  # the stage's gates were met: on to the next stage
    FINISHING = "finishing"  # last stage met, deployments still to finish
    COMPLETED = "completed"  # every reachable deployment is final
    NOTIFIED = "notified"  # pending devices were rung
    WAITING = "waiting"  # soaking, or below the success gate


# Steps the rollout worker does not print: nothing changed that an operator would look for.
QUIET_STEPS = frozenset({Step.IDLE, Step.WAITING, Step.PAUSED, Step.FINISHING})


class DeploymentState(models.TextChoices):
    PENDING = "pending", "Pending"
    NOTIFIED = "notified", "Notified"
    DOWNLOADING = "downloading", "Downloading"
    INSTALLED = "installed", "Installed"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    ROLLED_BACK = "rolled_back", "Rolled back"


# Told to install and not finished yet: the rollout waits on these, the timeout expires them.
IN_FLIGHT_DEPLOYMENT_STATES = (
    DeploymentState.NOTIFIED,
    DeploymentState.DOWNLOADING,
    DeploymentState.INSTALLED,
)
# What the error gate counts, monitoring lists and the dashboard draws as failures.
FAILED_DEPLOYMENT_STATES = (DeploymentState.FAILED, DeploymentState.TIMED_OUT)

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
