"""Build and install walle_engine (C++) with a progress line: the build takes minutes on two
cores, and a silent terminal looks hung. The full output goes to engine/build/install.log;
on failure its tail is printed. Run by `make setup` with the venv's Python."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "engine" / "build" / "install.log"
STEP = re.compile(r"\[(\d+)/(\d+)\]")  # ninja: "[12/87] Building CXX object ..."


def main() -> int:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    tty = sys.stdout.isatty()
    start = time.monotonic()
    last_shown = -1
    print("building walle_engine (C++); a full build takes a few minutes on two cores", flush=True)
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "-v"]
    command += ["--no-build-isolation", str(ROOT / "engine")]
    with LOG.open("w") as log:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        for line in proc.stdout:
            log.write(line)
            match = STEP.search(line)
            if not match:
                continue
            done, total = int(match.group(1)), int(match.group(2))
            percent = 100 * done // max(1, total)
            text = f"  [{done}/{total}] {percent}% compiled, {time.monotonic() - start:.0f} s"
            if tty:
                print("\r\033[K" + text, end="", flush=True)
            elif percent // 10 != last_shown // 10:  # a log: one line per tenth
                print(text, flush=True)
            last_shown = percent
        code = proc.wait()
    if tty and last_shown >= 0:
        print()
    if code:
        tail = LOG.read_text().splitlines()[-60:]
        print("\n".join(tail), file=sys.stderr)
        print(f"the engine build failed (exit {code}); full log: {LOG}", file=sys.stderr)
        return code
    print(f"walle_engine installed in {time.monotonic() - start:.0f} s (log: {LOG})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
