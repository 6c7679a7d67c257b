"""Fuzz target: the bytes of a model file, loaded and run as the device runtime does.

python engine/fuzz/fuzz_model_file.py -max_total_time=15 SCRATCH engine/fuzz/corpus/model_file
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import walle_engine as we
    from walle_engine import _core
    from walle_engine._format import ModelFile

sys.path.insert(0, os.path.dirname(__file__))
from _common import REFUSALS, small_limits

PATH = os.path.join(tempfile.mkdtemp(prefix="walle-fuzz-"), "model.walle")


def load_and_run(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        f = ModelFile(PATH)
        core = _core.Model(f.graph(), tune=False)
        model = we.Model(core, f)
        feeds = {i.name: we.np.ones(i.shape, dtype=i.dtype) for i in model.inputs}
        model.run(feeds)
    except REFUSALS:
        pass


def main() -> None:
    small_limits()
    atheris.Setup(sys.argv, load_and_run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
