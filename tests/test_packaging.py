"""A non-editable install works: the wheel built from the tracked files carries every app, the
console's templates and static files and the entry point, and Django starts from it alone.

The wheel goes into a fresh venv whose only other path is the development venv's
site-packages (for the dependencies; its editable-install hook is not loaded, since .pth files
run only in site directories), so an app missing from the wheel fails the import here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.live import ROOT

APPS = ["walle_web", "accounts", "tasks", "devices", "releases", "alerts", "console"]

CHECK = """
import importlib, os, sys
from pathlib import Path
site = Path(sys.argv[1]).resolve()
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    where = Path(module.__file__).resolve()
    assert where.is_relative_to(site), f"{name} imported from {where}, not the wheel"
import walle_device.client, walle_device.protocol, walle_device.vm.sandbox
os.environ["DJANGO_SETTINGS_MODULE"] = "walle_web.settings"
import django
django.setup()
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.template.loader import get_template
for name in ("console/base.html", "console/releases/dashboard.html"):
    assert Path(get_template(name).origin.name).resolve().is_relative_to(site), name
for name in ("console/dashboard.js", "console/console.css", "console/vendor/uplot/uPlot.iife.min.js"):
    found = finders.find(name)
    assert found and Path(found).resolve().is_relative_to(site), (name, found)
call_command("check")
print("ok")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source files (no build/ or egg-info in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(
        # Tracked files and new ones not ignored: what a commit of this tree would hold.
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    source = tmp / "src"
    for name in filter(None, tracked):
        path = Path(name.decode())
        if path.parts[0] == "engine" or not (ROOT / path).exists():
            continue
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    out = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=600,
    )
    [built] = out.glob("walle-*.whl")
    return built


def test_the_wheel_installs_alone_and_django_starts_from_it(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Dependencies from the development venv, after the clean venv's own site-packages.
    (site / "walle-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            # without it pip first uninstalls the development venv's own (editable) walle,
            # and every later test that starts a Python without the source tree breaks
            "--ignore-installed",
            "--prefix",
            str(env_dir),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    assert (env_dir / "bin" / "walle-device").exists()
    # the development venv keeps its own walle (the rest of the suite imports it)
    kept = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('walle'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert kept.returncode == 0, kept.stderr
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "WALLE_VAR_DIR": str(tmp_path / "var"),
        "WALLE_DEBUG": "1",
    }
    checked = subprocess.run(
        [python, "-c", CHECK, str(site), *APPS],
        cwd=tmp_path,  # not the source tree: nothing may come from there
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0 and checked.stdout.strip().endswith("ok"), checked.stderr
    # The script's shebang names the interpreter pip ran under; run it with the clean one.
    usage = subprocess.run(
        [python, env_dir / "bin" / "walle-device", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert usage.returncode == 0 and "usage" in usage.stdout.lower(), usage.stderr
