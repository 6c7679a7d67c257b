"""Try a task script locally, exactly as a device would run it.

    python -m walle_device.vm check task.py
    python -m walle_device.vm run task.py --inputs '{"user": 7}' --config '{"timeout_s": 2}' \
        --window events.json --file model.wle=build/model.wle --runs 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import SandboxViolation, TaskVM
from .sandbox import compile_task


def _json_arg(text: str | None) -> Any:
    if text is None:
        return None
    path = Path(text)
    return json.loads(path.read_text() if path.is_file() else text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m walle_device.vm", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="run the sandbox's load-time check only")
    check.add_argument("script")
    check.add_argument("--config", help="task config (its 'requires' matters): JSON or a file")
    check.add_argument(
        "--file", action="append", default=[], metavar="NAME=PATH", help="a bundle file"
    )
    run = sub.add_parser("run", help="run the task in the VM and print each RunResult")
    run.add_argument("script")
    run.add_argument("--inputs", help="JSON object, or a file holding one")
    run.add_argument("--window", help="JSON list of events, or a file holding one")
    run.add_argument("--config", help="task config: JSON object, or a file holding one")
    run.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a bundle file (model, *.py helper, data); repeatable",
    )
    run.add_argument("--runs", type=int, default=1)
    args = ap.parse_args(argv)

    try:
        source = Path(args.script).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"refused: cannot read {args.script}: {e}", file=sys.stderr)
        return 1
    try:
        files = {}
        for spec in args.file:
            name, _, path = spec.partition("=")
            files[name] = Path(path).read_bytes()
        config = _json_arg(args.config) or {}
        inputs, window = (
            (_json_arg(args.inputs), _json_arg(args.window)) if args.cmd == "run" else (None, None)
        )
        requires = frozenset(config.get("requires") or ())
    except (OSError, ValueError, TypeError, AttributeError) as e:
        print(f"refused: bad --file/--config/--inputs/--window: {e}", file=sys.stderr)
        return 1
    if args.cmd == "check":
        try:
            compile_task(Path(args.script).stem, source, files, requires)
        except SandboxViolation as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        print("ok")
        return 0

    process_workers = int(
        config.get("isolation") == "process" or bool(config.get("requires"))
    ) or int(bool(config.get("os_wall")))
    with TaskVM(1, process_workers=process_workers) as vm:
        try:
            vm.load(Path(args.script).stem, source, files, config)
        except (SandboxViolation, ValueError) as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        ok = True
        for _ in range(args.runs):
            r = vm.run(Path(args.script).stem, inputs, window=window)
            ok = ok and r.ok
            shown = {k: v for k, v in r.__dict__.items() if v not in (None, "", [])}
            print(json.dumps(shown, indent=1, default=repr))
        print(json.dumps({"state": vm.state(Path(args.script).stem)}, default=repr))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
