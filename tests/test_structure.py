"""The import direction between packages (scripts/imports.py) holds on this tree, and the
check finds what it is there to find: an upward import, a lazy one, and a cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.live import ROOT

SCRIPT = ROOT / "scripts" / "imports.py"


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_imports_point_one_way_in_this_tree():
    result = check(ROOT)
    assert result.returncode == 0, result.stderr
    assert "imports point one way" in result.stdout


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_an_upward_import_a_lazy_one_and_a_cycle_are_refused(tmp_path):
    write(
        tmp_path,
        {
            "accounts/__init__.py": "",
            "accounts/models.py": "from releases.models import Release\n",
            "tasks/__init__.py": "",
            "tasks/services.py": "def f():\n    from console import views\n",
            "console/__init__.py": "",
            "console/access.py": "def deny():\n    from console.views import page\n",
            "console/views.py": "from console.access import deny\n",
            "console/tests/__init__.py": "",
            "console/tests/test_x.py": "import walle_web.asgi\n",
            "releases/__init__.py": "",
            "releases/models.py": "from walle_web.params import ParamError\n",
        },
    )
    result = check(tmp_path)
    assert result.returncode == 1
    problems = result.stderr
    assert "accounts.models:1 imports releases" in problems
    assert "tasks.services:2 imports console" in problems  # lazy, inside a function
    assert "import cycle: console.access <-> console.views" in problems
    # Tests may drive the whole stack, and walle_web's libraries sit below the apps.
    assert "console.tests" not in problems and "releases.models" not in problems
