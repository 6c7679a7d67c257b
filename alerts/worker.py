"""The alert loop: a daemon thread of the rollout worker that delivers the outbox and checks
the error-rate rules, so a slow webhook never delays the evaluation of releases.

It holds nothing that matters in memory: the outbox is in the database, so a worker killed
mid-send loses nothing (the claimed delivery goes again once its lease ends).
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

log = logging.getLogger(__name__)
INTERVAL_S = 1.0
_thread: threading.Thread | None = None
_lock = threading.Lock()
_stop = threading.Event()


def run_once() -> dict:
    from alerts.services import check_error_rates, deliver_due

    raised = check_error_rates()
    return {"raised": raised, **deliver_due()}


def _loop() -> None:
    while not _stop.is_set():
        try:
            close_old_connections()
            run_once()
        except Exception:  # keep looping: the next pass retries from the database
            log.exception("the alert loop failed; retrying")
        _stop.wait(INTERVAL_S)
    close_old_connections()


def ensure_running() -> None:
    """Start the loop in this process once (the rollout worker calls this on every tick)."""
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _stop.clear()
            _thread = threading.Thread(target=_loop, name="walle-alerts", daemon=True)
            _thread.start()


def stop(timeout: float = 5.0) -> None:
    _stop.set()
    if _thread is not None:
        _thread.join(timeout)
