"""What one device counts about itself, for the simulator's progress line and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DeviceStats:
    connects: int = 0
    busy: int = 0  # sessions the server closed with 1013 (try again later)
    notices: int = 0
    deployed: int = 0
    failed: int = 0
    runs: int = 0
    run_errors: int = 0
    first_notice_at: float | None = None
    last_succeeded_at: float | None = None
    errors: list[str] = field(default_factory=list)
