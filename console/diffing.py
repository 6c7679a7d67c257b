"""Differences between two task versions: unified diffs of text files and config, sizes and
hashes of binaries."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from tasks.models import TaskVersion
from tasks.storage import content_store

MAX_TEXT_BYTES = 512 * 1024
TEXT_SUFFIXES = (".py", ".json", ".txt", ".md", ".yaml", ".yml", ".csv", ".cfg", ".toml", ".ini")


@dataclass
class FileDiff:
    path: str
    status: str  # added | removed | changed | unchanged
    old: dict | None
    new: dict | None
    lines: list[str]  # unified diff lines, empty for binaries and unchanged files
    binary: bool = False
    note: str = ""


def _text(entry: dict) -> str | None:
    """The file as text, or None when it is binary, too large or missing from the store."""
    if entry["size"] > MAX_TEXT_BYTES:
        return None
    try:
        data = content_store().read(entry["sha256"])
    except (OSError, ValueError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _unified(old: str, new: str, a: str, b: str) -> list[str]:
    return list(
        difflib.unified_diff(
            old.splitlines(), new.splitlines(), fromfile=a, tofile=b, lineterm="", n=3
        )
    )


def diff_versions(old: TaskVersion, new: TaskVersion) -> dict:
    """Everything that differs from `old` to `new`, ready for the diff template."""
    a_files = {f["path"]: f for f in old.manifest["files"]}
    b_files = {f["path"]: f for f in new.manifest["files"]}
    files = []
    for path in sorted(a_files.keys() | b_files.keys()):
        fa, fb = a_files.get(path), b_files.get(path)
        if fa and fb and fa["sha256"] == fb["sha256"]:
            files.append(FileDiff(path, "unchanged", fa, fb, []))
            continue
        status = "added" if fa is None else "removed" if fb is None else "changed"
        ta = _text(fa) if fa else ""
        tb = _text(fb) if fb else ""
        if ta is None or tb is None:
            files.append(
                FileDiff(path, status, fa, fb, [], binary=True, note="binary or large file")
            )
            continue
        lines = _unified(ta, tb, f"v{old.number}/{path}", f"v{new.number}/{path}")
        files.append(FileDiff(path, status, fa, fb, lines))
    config_lines = _unified(
        json.dumps(old.config, indent=2, sort_keys=True),
        json.dumps(new.config, indent=2, sort_keys=True),
        f"v{old.number}/config",
        f"v{new.number}/config",
    )
    return {
        "old": old,
        "new": new,
        "files": files,
        "changed": [f for f in files if f.status != "unchanged"],
        "config_lines": config_lines,
        "entry_point_changed": old.entry_point != new.entry_point,
    }


def line_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "meta"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return ""
