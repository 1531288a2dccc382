"""The last lines of the trainer's log, wrapped to the panel's width."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import RichLog

LINES_KEPT = 200
# A reattached screen reads at most this much of a long log's end: the tail, not the history.
FIRST_READ_BYTES = 64 * 1024


def read_new_lines(path: Path, offset: int | None) -> tuple[list[str], int | None]:
    """Complete lines appended to `path` since `offset` (None: nothing read yet), and the next offset."""
    try:
        with open(path, "rb") as stream:
            size = stream.seek(0, 2)
            from_the_end = offset is None or offset > size  # first read, or the log was truncated
            if from_the_end:
                offset = max(0, size - FIRST_READ_BYTES)
            stream.seek(offset)
            chunk = stream.read()
    except OSError:
        return [], offset
    cut = chunk.rfind(b"\n") + 1
    lines = chunk[:cut].decode("utf-8", "replace").splitlines()
    if from_the_end and offset > 0:
        lines = lines[1:]  # began mid-line
    return lines[-LINES_KEPT:], offset + cut


class LogTail(RichLog):
    DEFAULT_CSS = """
    LogTail {
        height: 1fr;
        border: round $panel;
        border-title-color: $text-muted;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, title: str = "trainer.log", **kwargs) -> None:
        super().__init__(max_lines=LINES_KEPT, min_width=20, wrap=True, markup=False, highlight=False, **kwargs)
        self.border_title = title

    def add_lines(self, lines: list[str]) -> None:
        for line in lines:
            # Progress bars redraw with carriage returns: the last state of the line is what was seen.
            self.write(Text(line.rsplit("\r", 1)[-1], no_wrap=False))
