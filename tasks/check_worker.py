"""The upload check, run as `python -m tasks.check_worker JOB_DIR` in its own process.

It unpacks a .zip bundle, validates the files, compiles the entry point and converts ONNX
models: the steps whose cost hostile input controls (a 10 MB entry point took 2.8 GB and 20 s
in the compiler; a 224-byte ONNX file converted to a 320 MB model). Here they run under
resource limits that the process sets on itself before it reads any input: address space
(memory), CPU seconds and the largest file it may write. The server waits for it without
holding the GIL, so other requests go on, and refuses the upload if it fails or is killed.

Job directory: `job.json` (limits, entry_point, config, notes, and either `bundle` or
`files` as [path, input file] pairs) in; `result.json` and `out/<n>` files out. Never imports
Django.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path

from tasks.bundles import BundleError, Limits, check_sizes, read_zip, validate_bundle

MAIN_PY = "main.py"


def set_limits(memory_mb: int, cpu_s: int, max_file_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
    # SIGXCPU at the soft limit ends the process; the hard limit is the backstop.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    # Writing past the largest allowed file fails with EFBIG instead of filling the disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes + 1,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(job_dir: Path) -> dict:
    spec = json.loads((job_dir / "job.json").read_text())
    limits = Limits(**spec["limits"])
    meta: dict = {}
    if spec.get("bundle"):
        files, meta = read_zip(job_dir / spec["bundle"], limits)
    else:
        files = {}
        for path, name in spec["files"]:
            with open(job_dir / name, "rb") as fh:
                files[path] = fh.read(limits.max_file_bytes + 1)
    entry_point = (
        spec.get("entry_point") or meta.get("entry_point") or (MAIN_PY if MAIN_PY in files else "")
    )
    config = spec["config"] if spec.get("config") is not None else meta.get("config", {})
    notes = spec.get("notes") or meta.get("notes", "")
    if not isinstance(entry_point, str):
        raise BundleError({"entry_point": ["walle.json: entry_point must be a string"]})
    if not isinstance(notes, str):
        raise BundleError({"notes": ["walle.json: notes must be a string"]})
    bundle = validate_bundle(files, entry_point, config, limits)
    if any(p.lower().endswith(".onnx") for p in bundle.files):
        from tasks.models_convert import convert_onnx_files

        bundle = convert_onnx_files(bundle)
        # Limits again on what conversion produced (the server checks once more).
        sizes = {path: len(data) for path, data in bundle.files.items()}
        if problems := check_sizes(sizes, limits):
            raise BundleError({"files": [f"after model conversion: {p}" for p in problems]})
    out = job_dir / "out"
    out.mkdir()
    written = []
    for i, (path, data) in enumerate(sorted(bundle.files.items())):
        (out / str(i)).write_bytes(data)
        written.append([path, f"out/{i}"])
    return {
        "ok": True,
        "entry_point": bundle.entry_point,
        "config": bundle.config,
        "notes": notes,
        "files": written,
    }


def main() -> int:
    job_dir = Path(sys.argv[1])
    spec = json.loads((job_dir / "job.json").read_text())
    set_limits(spec["memory_mb"], spec["cpu_s"], spec["limits"]["max_file_bytes"])
    try:
        result = run(job_dir)
    except BundleError as exc:
        result = {"ok": False, "errors": exc.errors}
    except MemoryError:
        result = {
            "ok": False,
            "errors": {"files": [f"checking the upload needed more than {spec['memory_mb']} MB"]},
        }
    except OSError as exc:
        result = {"ok": False, "errors": {"files": [f"the upload could not be checked: {exc}"]}}
    # Written last and whole: the server reads no result from a worker that died midway.
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, job_dir / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
