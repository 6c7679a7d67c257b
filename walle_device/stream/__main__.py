"""Command line: `python -m walle_device.stream explain --state-dir DIR --trigger SPEC.json`.

Replays the device's persisted event log through one trigger spec and prints why it did or
did not fire; `validate` checks a spec file the way the cloud does at upload.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from walle_device.stream.naive import explain_trigger
from walle_device.stream.spec import compile_trigger, validate_trigger
from walle_device.stream.store import EventStore


def _load(path: str) -> dict:
    data = json.loads(Path(path).read_text())
    # Accept a whole task config as well as a bare trigger.
    return data["trigger"] if isinstance(data, dict) and "trigger" in data else data


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m walle_device.stream")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("explain", help="replay the persisted log through a trigger")
    ex.add_argument("--state-dir", required=True, help="the device's stream state directory")
    ex.add_argument("--trigger", required=True, help="a trigger spec (or task config) JSON file")
    ex.add_argument("--last", type=int, default=10_000, help="how many recent events to replay")
    ex.add_argument("--task", default="task", help="a name for the report")
    ex.add_argument("--json", action="store_true", help="print JSON instead of text")
    va = sub.add_parser("validate", help="check a trigger spec file")
    va.add_argument("trigger")
    args = ap.parse_args(argv)
    spec = _load(args.trigger)
    errors = validate_trigger(spec)
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 1
    if args.cmd == "validate":
        print("ok")
        return 0
    db = Path(args.state_dir) / "events.sqlite3"
    if not db.exists():
        print(
            f"error: no event log at {db}; pass the directory given to Stream(state_dir=...)",
            file=sys.stderr,
        )
        return 1
    store = EventStore(db)
    events = store.tail(args.last)
    store.close()
    report = explain_trigger(args.task, compile_trigger(spec), events)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
