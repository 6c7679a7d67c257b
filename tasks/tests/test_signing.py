"""The release key: created once on first use, even when many processes need it at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_USE = """
import sys, time
import django
django.setup()
from tasks.signing import public_key_b64
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(public_key_b64())
"""


def test_concurrent_first_use_creates_one_key(tmp_path):
    key_file = tmp_path / "keys" / "release-key.pem"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "walle_web.settings",
        "WALLE_VAR_DIR": str(tmp_path / "var"),
        "WALLE_RELEASE_KEY_FILE": str(key_file),
    }
    start_at = time.time() + 4  # every process is past django.setup() by then, then all go
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USE, str(start_at)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in outputs]
    keys = {out.strip() for out, _ in outputs}
    assert len(keys) == 1 and key_file.is_file()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in key_file.parent.iterdir() if p.name != key_file.name]  # no leftovers
