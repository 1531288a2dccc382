"""Model: a Hub id (or a name to search for) or a local folder; its size, architecture, licence and access."""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input, LoadingIndicator, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from core.errors import ModelError
from tui.screens.base import WizardStep
from tui.state import ModelInfo
from tui.widgets.model_summary import ModelSummaryView, human_count
from tui.widgets.path_suggester import PathSuggester

INTRO = "Which model to fine-tune: a Hub id (org/name), a name to search the Hub for, or a local folder."


def looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or text.endswith("/")


def local_model_info(folder: Path) -> ModelInfo:
    """Facts from a save_pretrained folder: config.json, the safetensors headers, the model card's licence."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder} has no config.json; point at the folder save_pretrained wrote.")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{config_path} is not valid JSON; re-save the model with save_pretrained.") from None
    weights = sorted(folder.glob("*.safetensors"))
    size = sum(path.stat().st_size for path in weights) or None
    parameters = sum(_safetensors_parameters(path) for path in weights) or None
    architectures = config.get("architectures") or []
    return ModelInfo(id=str(folder), source="local", architecture=architectures[0] if architectures else None,
                     model_type=config.get("model_type"), parameters=parameters, license=_card_license(folder),
                     size_bytes=size)


def _safetensors_parameters(path: Path) -> int:
    """Counts parameters from the file's JSON header without loading any tensor."""
    try:
        with path.open("rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            header = json.loads(stream.read(length))
    except (OSError, struct.error, ValueError):
        return 0
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dimension in entry.get("shape", []):
            count *= dimension
        total += count
    return total


def _card_license(folder: Path) -> str | None:
    try:
        card = (folder / "README.md").read_text(errors="replace")
    except OSError:
        return None
    front = re.match(r"---\n(.*?)\n---", card, re.S)
    found = re.search(r"^license:\s*(\S+)", front.group(1), re.M) if front else None
    return found.group(1) if found else None


def summary_to_info(summary: Any) -> ModelInfo:
    return ModelInfo(id=summary.id, source="hub", architecture=summary.architecture, model_type=summary.model_type,
                     parameters=summary.parameters, license=summary.license, size_bytes=summary.size_bytes,
                     gated=summary.gated, can_access=summary.can_access, access_url=summary.access_url)


class ModelScreen(WizardStep):
    STEP = "model"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "look_up", "Look up", id="look-up", tooltip="Look the model up (or search the Hub)"),
    ]

    @dataclass
    class ModelFound(Message):
        info: ModelInfo
        advance: bool

    @dataclass
    class SearchDone(Message):
        query: str
        hits: list[Any]

    def compose_body(self) -> ComposeResult:
        yield Static(INTRO, id="model-intro")
        yield Input(value=self.state.config.model, placeholder="Qwen/Qwen2.5-0.5B-Instruct, llama, or ./my-model",
                    id="model-id", suggester=PathSuggester(files=False),
                    tooltip="Enter looks it up; a single word searches the Hub")
        yield LoadingIndicator(id="model-loading")
        yield OptionList(id="search-results")
        yield ModelSummaryView(id="model-summary")

    def on_mount(self) -> None:
        self.query_one("#model-loading").display = False
        self.query_one("#search-results").display = False
        if self.state.model_info is not None and self.state.model_info.id == self.state.config.model:
            self.query_one(ModelSummaryView).info = self.state.model_info
        elif self.state.config.model:
            self.look_up()  # the demo's model, or one chosen before: show what it is
        self.query_one("#model-id", Input).focus()

    # -- looking up ---------------------------------------------------------------------------

    def look_up(self, advance: bool = False) -> None:
        text = self.query_one("#model-id", Input).value.strip()
        if not text:
            self.show_error("Give a Hub model id like Qwen/Qwen2.5-0.5B-Instruct, a name to search for, or a local folder.")
            return
        self.clear_error()
        self.query_one("#model-loading").display = True
        self.find_model(text, advance)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model", description="looking the model up")
    def find_model(self, text: str, advance: bool) -> None:
        expanded = Path(os.path.expanduser(text))
        if expanded.is_dir():
            self.post_message(self.ModelFound(local_model_info(expanded), advance))
            return
        if looks_like_path(text) or expanded.exists():
            raise ModelError(f"There is no model folder {text}; check the path, or give a Hub id (org/name).")
        from core.hub import model_summary, search_models

        if "/" not in text:
            self.post_message(self.SearchDone(text, search_models(text, limit=20, token=self.state.token)))
            return
        self.post_message(self.ModelFound(summary_to_info(model_summary(text, token=self.state.token)), advance))

    @on(ModelFound)
    def model_found(self, message: ModelFound) -> None:
        self.query_one("#model-loading").display = False
        self.query_one("#search-results").display = False
        info = message.info
        if self.state.config.model != info.id:
            self.state.config.model = info.id
            self.state.token_lengths = None  # counted with the previous model's tokenizer
        self.state.model_info = info
        self.query_one("#model-id", Input).value = info.id
        self.query_one(ModelSummaryView).info = info
        if message.advance:
            self.action_next()

    @on(SearchDone)
    def search_done(self, message: SearchDone) -> None:
        self.query_one("#model-loading").display = False
        results = self.query_one("#search-results", OptionList)
        results.clear_options()
        if not message.hits:
            results.display = False
            self.show_error(f"No Hub model matches '{message.query}'; try another name, or give org/name.")
            return
        for hit in message.hits:
            details = f"  {human_count(hit.downloads)} downloads" if hit.downloads is not None else ""
            gated = "  gated" if hit.gated else ""
            results.add_option(Option(Text.assemble((hit.id, "bold"), (details + gated, "dim")), id=hit.id))
        results.display = True
        results.highlighted = 0
        results.focus()

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.query_one("#model-loading").display = False
        self.show_error(message)

    # -- actions ------------------------------------------------------------------------------

    @on(Input.Submitted, "#model-id")
    def action_look_up(self) -> None:
        self.look_up()

    @on(Input.Changed, "#model-id")
    def model_edited(self) -> None:
        self.clear_error()

    @on(OptionList.OptionSelected, "#search-results")
    def hit_chosen(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#model-id", Input).value = event.option.id or ""
        self.query_one("#model-id", Input).focus()
        self.look_up()

    def ready_to_continue(self) -> str | None:
        info = self.state.model_info
        if info is None:
            return "Look a model up first (type its id or folder and press Enter)."
        if not info.can_access:
            who = "this token" if self.state.token else "an anonymous download (no token)"
            return f"{info.id} is gated and {who} has no access: request it at {info.access_url}, or pick another model."
        return None

    def action_next(self) -> None:
        text = self.query_one("#model-id", Input).value.strip()
        info = self.state.model_info
        if text and (info is None or info.id != text):
            self.look_up(advance=True)
            return
        super().action_next()
