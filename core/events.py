"""events.jsonl: the trainer's account of a run, one JSON object a line, read by the CLI and the wizard.

The trainer appends; readers tail. A line is written in one `write` call and fsynced, so a
reader never sees half a line except at the very end of the file, which it leaves for later.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
EVENT_TYPES = ("started", "step", "eval", "checkpoint", "done", "failed", "cancelled")
FINAL_TYPES = ("done", "failed", "cancelled")


class EventWriter:
    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        event = {"type": type, "time": round(time.time(), 3), **fields}
        line = json.dumps(event, default=_jsonable) + "\n"
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())
        return event


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def follow_events(run_dir: str | os.PathLike, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events appended since byte `offset`, and the offset to pass next time. Never blocks."""
    path = Path(run_dir) / EVENTS_FILE
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read()
    except FileNotFoundError:
        return [], offset
    events = []
    consumed = 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break  # a line still being written
        consumed += len(raw)
        try:
            event = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a torn line from a killed writer: skip it, keep the rest of the history
        if isinstance(event, dict) and "type" in event:
            events.append(event)
    return events, offset + consumed


def read_events(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    return follow_events(run_dir, 0)[0]


def last_event(run_dir: str | os.PathLike, types: tuple[str, ...] | None = None) -> dict[str, Any] | None:
    for event in reversed(read_events(run_dir)):
        if types is None or event["type"] in types:
            return event
    return None


def duration(seconds: float | None) -> str:
    """3m05s, 2h07m; '-' when not known yet (how the CLI and the wizard show elapsed time and ETA)."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
