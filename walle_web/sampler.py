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
    def __init__(self, path: Path) -> None:
        self.path = path
        self.stacks: Counter[str] = Counter()
        self._on = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, lambda *_: self.start())
        signal.signal(signal.SIGUSR2, lambda *_: self.stop())

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self.stacks.clear()
            self._on.set()
            self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._on.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lines = [f"{stack} {n}" for stack, n in self.stacks.most_common()]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)

    def _run(self) -> None:
        me = threading.get_ident()
        while self._on.is_set():
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                parts = []
                while frame is not None:
                    code = frame.f_code
                    parts.append(f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})")
                    frame = frame.f_back
                parts.append(names.get(ident, str(ident)))
                self.stacks[";".join(reversed(parts))] += 1
            time.sleep(INTERVAL_S)
