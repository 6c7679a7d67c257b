"""Read-only aggregates of releases for the API and the console."""

from __future__ import annotations

from django.db.models import Count

from releases.choices import DeploymentState
from releases.models import Release


def deployment_counts(release: Release) -> dict[str, int]:
    counts = {state: 0 for state in DeploymentState.values}
    for row in release.deployments.values("state").annotate(n=Count("id")).order_by():
        counts[row["state"]] = row["n"]
    counts["total"] = sum(counts[s] for s in DeploymentState.values)
    return counts
