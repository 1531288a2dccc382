"""Completes local paths in an Input as the user types (a suggestion shown greyed, accepted with →)."""

from __future__ import annotations

import os

from textual.suggester import Suggester


class PathSuggester(Suggester):
    def __init__(self, files: bool = True) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.files = files

    async def get_suggestion(self, value: str) -> str | None:
        # Only what looks like a path: a Hub id (org/name) must not be completed against the disk.
        if not value.startswith(("/", ".", "~")):
            return None
        expanded = os.path.expanduser(value)
        folder, prefix = os.path.split(expanded)
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            return None
        for name in names:
            if name.startswith(prefix) and name != prefix and not name.startswith("."):
                full = os.path.join(folder, name)
                if not self.files and not os.path.isdir(full):
                    continue
                suffix = name[len(prefix):] + ("/" if os.path.isdir(full) else "")
                return value + suffix
        return None
