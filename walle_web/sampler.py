"""A small sampling profiler for a server process, for benchmarks (no py-spy needed).

`python -m walle_web.serve` installs it when WALLE_PROFILE_SAMPLES names a file: SIGUSR1
starts sampling every thread's stack (200 times a second, from a thread of its own), SIGUSR2
stops and writes the stacks in the folded format flame-graph tools read (`thread;frame;...
count`, outermost frame first). bench/delivery.py --sample drives it around a release.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

INTERVAL_S = 0.005


class Sampler:
    def __init__(self, path: Path, main_only: bool = False) -> None:
        self.path = path
        # Only the main thread (the event loop), sampled by a wall-clock timer signal whose
        # handler gets the main thread's frame: in a process running sub-interpreters (the
        # device VM) sys._current_frames() walks their threads too and crashes the process.
        self.main_only = main_only
        self.stacks: Counter[str] = Counter()
        self._on = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, lambda *_: self.start())
        signal.signal(signal.SIGUSR2, lambda *_: self.stop())

    def start(self) -> None:
        if self.main_only:
            self.stacks.clear()
            signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, INTERVAL_S, INTERVAL_S)
            return
        if self._thread is None or not self._thread.is_alive():
            self.stacks.clear()
            self._on.set()
            self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self.main_only:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
        self._on.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lines = [f"{stack} {n}" for stack, n in self.stacks.most_common()]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)

    def _on_alarm(self, _signum, frame) -> None:
        self.stacks[_folded(frame, "MainThread")] += 1

    def _run(self) -> None:
        me = threading.get_ident()
        main = threading.main_thread().ident
        while self._on.is_set():
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me or (self.main_only and ident != main):
                    continue
                self.stacks[_folded(frame, names.get(ident, str(ident)))] += 1
            time.sleep(INTERVAL_S)


def _folded(frame, thread: str) -> str:
    parts = []
    while frame is not None:
        code = frame.f_code
        parts.append(f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})")
        frame = frame.f_back
    parts.append(thread)
    return ";".join(reversed(parts))
