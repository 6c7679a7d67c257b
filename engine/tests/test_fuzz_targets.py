"""The fuzz targets replay their committed corpora (seeds and regress-* reproducers of
crashes found before) cleanly, each in a child process so a crash fails the test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))


def test_every_target_has_a_seed_corpus() -> None:
    assert set(TARGETS) == {"model_file", "graph_json", "tensor", "array_ops"}
    for t in TARGETS:
        assert list((FUZZ / "corpus" / t).glob("seed-*")), t


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", TARGETS)
def test_target_replays_its_corpus(target: str) -> None:
    files = sorted(str(p) for p in (FUZZ / "corpus" / target).iterdir())
    proc = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{target}.py"), *files],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"Executed {files[-1]}" in proc.stderr
