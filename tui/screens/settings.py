"""Settings: sound defaults for the model and method, the rest under Advanced, checked as you type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Checkbox, Collapsible, Input, Label

from core.config import config_from_dict, describe_fields
from core.errors import ConfigError
from tui.screens.base import WizardStep
from tui.widgets.length_histogram import cut_count
from tui.widgets.setting_field import SettingField

MAIN_SETTINGS = ("output_dir", "train.epochs", "train.max_steps", "train.lr", "train.batch_size", "train.grad_accum",
                 "data.max_length", "lora.r", "lora.alpha")
# Chosen on earlier steps.
CHOSEN_EARLIER = ("model", "method", "data.path", "data.format")
# What the estimator's fastest-settings search fills in.
TUNED_SETTINGS = ("batch_size", "grad_accum", "gradient_checkpointing", "max_length")


def set_path(values: dict[str, Any], key: str, value: Any) -> None:
    *parents, name = key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
    node[name] = value


def key_in_message(message: str, keys: list[str]) -> str | None:
    """The setting a ConfigError is about: the first key it names as a whole word ("train.epochs must ...")."""
    found = []
    for key in keys:
        match = re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message)
        if match:
            found.append((match.start(), -len(key), key))
    return min(found)[2] if found else None


DEMO_NOTE = "The demo's settings, sized to train in about two minutes on two CPU cores."


class SettingsScreen(WizardStep):
    STEP = "settings"

    @dataclass
    class Tuned(Message):
        settings: dict[str, Any] | None

    def __init__(self, state) -> None:
        super().__init__(state)
        self.edited: set[str] = set()
        self.last_edited: str | None = None

    def compose_body(self) -> ComposeResult:
        config = self.state.config
        if not config.output_dir or config.output_dir == self.state.suggested_output:
            config.output_dir = self.state.suggested_output = self.state.suggested_output_dir()
        values = config.to_dict()
        rows = [(key, default, help) for key, default, help in describe_fields() if key not in CHOSEN_EARLIER]
        current = {key: _get_path(values, key) for key, _, _ in rows}
        optional = {key for key, default, _ in rows if default is None}
        yield Label(f"Training {config.model} with {config.method}. Hover or focus a field for its help.",
                    id="settings-intro")
        with Vertical(id="main-settings"):
            for key in MAIN_SETTINGS:
                help = next(help for k, _, help in rows if k == key)
                yield SettingField(key, current[key], help, optional=key in optional)
        yield Label("", id="settings-note")
        with Collapsible(title="Advanced settings", collapsed=True, id="advanced"):
            for key, _, help in rows:
                if key not in MAIN_SETTINGS:
                    yield SettingField(key, current[key], help, optional=key in optional)

    def on_mount(self) -> None:
        if self.state.in_demo:
            self.query_one("#settings-note", Label).update(DEMO_NOTE)
        self.show_cut_note()
        self.query(Input).first().focus()
        if not self.state.in_demo:  # the demo's settings are chosen for two CPU cores: keep them
            self.tune()

    # -- sound defaults -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="tune", description="finding the fastest settings")
    def tune(self) -> None:
        from tui.engine import fastest_settings

        self.post_message(self.Tuned(fastest_settings(self.state)))

    @on(Tuned)
    def tuned(self, message: Tuned) -> None:
        if not message.settings:
            return
        applied = []
        for name in TUNED_SETTINGS:
            key = f"data.{name}" if name == "max_length" else f"train.{name}"
            if name in message.settings and key not in self.edited:
                self.field(key).set_value(message.settings[name])
                value = message.settings[name]
                applied.append(f"{name} {str(value).lower() if isinstance(value, bool) else value}")
        if applied:
            self.query_one("#settings-note", Label).update(
                f"Fastest settings that fit this machine: {', '.join(applied)}."
            )
        self.validate()

    def worker_failed(self, worker, message: str) -> None:
        # No fastest-settings search is not a problem with the user's settings: the defaults stand.
        self.query_one("#settings-note", Label).update(f"Using the default batch settings ({message})")

    # -- checking as you type -----------------------------------------------------------------

    def field(self, key: str) -> SettingField:
        return next(field for field in self.query(SettingField) if field.key == key)

    @on(Input.Changed, ".setting-input")
    @on(Checkbox.Changed, ".setting-input")
    def setting_changed(self, event: Input.Changed | Checkbox.Changed) -> None:
        field = next(node for node in event.control.ancestors if isinstance(node, SettingField))
        if field.is_mounted and event.control.has_focus:
            self.edited.add(field.key)
        self.last_edited = field.key
        self.validate()
        if field.key == "data.max_length":
            self.show_cut_note()

    def validate(self) -> tuple[Any, str | None]:
        """(config, None) when the settings make a valid config, else (None, the error) shown under its field."""
        fields = list(self.query(SettingField))
        for field in fields:
            field.set_error("")
        values = self.state.config.to_dict()
        try:
            for field in fields:
                set_path(values, field.key, field.value())
            config = config_from_dict(values)
        except ConfigError as error:
            message = str(error)
            key = key_in_message(message, [field.key for field in fields]) or self.last_edited
            target = next((field for field in fields if field.key == key), None)
            if target is None:
                self.show_error(message)
            else:
                target.set_error(message)
                advanced = self.query_one("#advanced", Collapsible)
                if target in advanced.query(SettingField):
                    advanced.collapsed = False
            return None, message
        self.clear_error()
        return config, None

    def show_cut_note(self) -> None:
        lengths = self.state.token_lengths
        if not lengths:
            return
        try:
            max_length = int(self.field("data.max_length").value())
        except (TypeError, ValueError, ConfigError):
            return
        cut = cut_count(lengths, max_length)
        demo = DEMO_NOTE + " " if self.state.in_demo else ""
        self.query_one("#settings-note", Label).update(demo + (
            f"max_length {max_length}: {cut} of {len(lengths)} examples counted would be cut." if cut
            else f"max_length {max_length}: no example counted is longer."
        ))

    def ready_to_continue(self) -> str | None:
        config, problem = self.validate()
        if config is None:
            return f"Fix the setting first: {problem}"
        self.state.config = config
        return None


def _get_path(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node
