"""One run-config setting: its key, an input (a checkbox for true/false), and the error under it."""

from __future__ import annotations

from typing import Any

import yaml
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, Label

from core.config import parse_override


def field_id(key: str) -> str:
    return "setting-" + key.replace(".", "--").replace("_", "-")


def value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class SettingField(Vertical):
    """Holds the setting's key; `value()` reads the input back the way `--set key=value` does."""

    def __init__(self, key: str, value: Any, help: str, *, optional: bool = False) -> None:
        super().__init__(id=field_id(key), classes="setting")
        self.key = key
        self.initial = value
        self.help = help
        self.optional = optional
        self.is_bool = isinstance(value, bool)

    def compose(self) -> ComposeResult:
        with Horizontal(classes="setting-row"):
            yield Label(self.key, classes="setting-key")
            if self.is_bool:
                yield Checkbox(self.help, value=self.initial, classes="setting-input", compact=True,
                               tooltip=self.key)
            else:
                placeholder = "none" if self.optional else ""
                yield Input(value_text(self.initial), placeholder=placeholder, classes="setting-input", compact=True,
                            tooltip=self.help)
        yield Label("", classes="setting-error error")

    def on_mount(self) -> None:
        self.query_one(".setting-error").display = False

    def value(self) -> Any:
        if self.is_bool:
            return self.query_one(Checkbox).value
        text = self.query_one(Input).value.strip()
        if not text:
            return None if self.optional else ""
        return parse_override(f"{self.key}={text}")[1]

    def set_value(self, value: Any) -> None:
        if self.is_bool:
            self.query_one(Checkbox).value = bool(value)
        else:
            self.query_one(Input).value = value_text(value)

    def set_error(self, message: str) -> None:
        error = self.query_one(".setting-error", Label)
        error.update(message)
        error.display = bool(message)
        self.set_class(bool(message), "-invalid")
