"""Dataset: a Hub id or a local file; the detected format, examples as the model sees them, token lengths."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, LoadingIndicator, Select, Static
from textual.worker import Worker

from core.config import FORMATS
from tui.screens.base import WizardStep
from tui.widgets.length_histogram import LengthHistogram
from tui.widgets.path_suggester import PathSuggester
from tui.widgets.token_preview import TokenPreview, legend

INTRO = "Training data: a local .jsonl/.json/.csv/.parquet file or a Hub dataset id (alpaca, messages or text rows)."
PREVIEW_EXAMPLES = 3
LENGTH_LIMIT = 2000  # examples tokenized for the histogram: enough for the shape, quick on a CPU


class DatasetScreen(WizardStep):
    STEP = "dataset"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+l", "load", "Load", id="load-dataset", tooltip="Load the dataset and preview it"),
    ]

    @dataclass
    class Loaded(Message):
        path: str
        format: str
        detected: str
        rows_total: int
        rows_used: int
        problems: list[str]
        problem_count: int
        previews: list[list[tuple[str, bool]]]
        lengths: list[int]
        note: str | None

    def __init__(self, state) -> None:
        super().__init__(state)
        self.loaded_path: str | None = None

    def compose_body(self) -> ComposeResult:
        data = self.state.config.data
        yield Static(INTRO, id="dataset-intro")
        with Horizontal(id="dataset-source"):
            yield Input(value=data.path, placeholder="data.jsonl or org/dataset", id="dataset-path",
                        suggester=PathSuggester(), tooltip="Enter loads the dataset and previews it")
            yield Select([(name, name) for name in FORMATS], value=data.format, allow_blank=False, id="dataset-format",
                         tooltip="Row format; auto detects it from the columns")
        yield LoadingIndicator(id="dataset-loading")
        yield Label("", id="dataset-detected")
        yield Label("", id="dataset-problems", classes="warning")
        yield LengthHistogram(id="lengths")
        with Vertical(id="dataset-preview"):
            yield Label(legend(), id="preview-legend")

    def on_mount(self) -> None:
        for selector in ("#dataset-loading", "#dataset-problems", "#dataset-preview", "#lengths"):
            self.query_one(selector).display = False
        self.query_one("#dataset-path", Input).focus()
        if self.state.in_demo and self.state.config.data.path:
            self.action_load()  # the demo's data: its preview is the point of this step

    # -- loading ------------------------------------------------------------------------------

    def action_load(self, advance: bool = False) -> None:
        path = self.query_one("#dataset-path", Input).value.strip()
        if not path:
            self.show_error("Give a dataset: a .jsonl/.json/.csv/.parquet file, or a Hub dataset id (org/name).")
            return
        if not self.state.config.model:
            self.show_error("Choose a model first (press Esc to go back): the preview uses its tokenizer.")
            return
        self.clear_error()
        self.query_one("#dataset-loading").display = True
        self.load_dataset(path, str(self.query_one("#dataset-format", Select).value))

    @work(thread=True, exclusive=True, exit_on_error=False, group="dataset", description="loading the dataset")
    def load_dataset(self, path: str, format: str) -> None:
        # These imports pull in datasets and transformers (seconds); this is a thread worker for that reason.
        from core.data import ensure_chat_template, load_dataset_for, render_preview, token_lengths
        from core.model import load_tokenizer

        config = self.state.config
        settings = dataclasses.replace(config.data, path=path, format=format)
        loaded = load_dataset_for(settings, token=self.state.token)
        tokenizer = load_tokenizer(config.model, revision=config.revision, token=self.state.token,
                                   trust_remote_code=config.trust_remote_code)
        note = ensure_chat_template(tokenizer)
        examples = loaded.examples
        previews = [render_preview(tokenizer, examples[index], settings.max_length, settings.completion_only_loss)
                    for index in range(min(PREVIEW_EXAMPLES, len(examples)))]
        lengths = token_lengths(tokenizer, examples, limit=LENGTH_LIMIT)
        self.post_message(self.Loaded(path, loaded.format, loaded.detected, loaded.rows_total, loaded.rows_used,
                                      list(loaded.problems), loaded.problem_count, previews, lengths, note))

    @on(Loaded)
    def loaded(self, message: Loaded) -> None:
        state = self.state
        self.query_one("#dataset-loading").display = False
        state.config.data.path = message.path
        state.config.data.format = str(self.query_one("#dataset-format", Select).value)
        state.token_lengths = message.lengths
        self.loaded_path = message.path
        skipped = f"; {message.problem_count} skipped" if message.problem_count else ""
        note = f" {message.note}" if message.note else ""
        self.query_one("#dataset-detected", Label).update(
            f"{message.detected} {message.rows_used} of {message.rows_total} rows usable{skipped}.{note}"
        )
        problems = self.query_one("#dataset-problems", Label)
        problems.display = bool(message.problems)
        shown = message.problems[:3]
        more = message.problem_count - len(shown)
        problems.update("\n".join(shown) + (f"\n…and {more} more" if more > 0 else ""))
        preview = self.query_one("#dataset-preview", Vertical)
        preview.remove_children(TokenPreview)
        preview.mount_all(
            TokenPreview(spans, title=f"Example {number} as the model sees it")
            for number, spans in enumerate(message.previews, 1)
        )
        preview.display = True
        histogram = self.query_one(LengthHistogram)
        histogram.display = True
        histogram.max_length = state.config.data.max_length
        histogram.lengths = message.lengths

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.query_one("#dataset-loading").display = False
        self.show_error(message)

    # -- actions ------------------------------------------------------------------------------

    @on(Input.Submitted, "#dataset-path")
    def path_submitted(self) -> None:
        self.action_load()

    @on(Select.Changed, "#dataset-format")
    def format_changed(self) -> None:
        if self.loaded_path:
            self.action_load()

    def ready_to_continue(self) -> str | None:
        path = self.query_one("#dataset-path", Input).value.strip()
        if not path:
            return "Give a dataset: a .jsonl/.json/.csv/.parquet file, or a Hub dataset id (org/name)."
        if path != self.loaded_path:
            return "Load the dataset first (press Enter in the path field) to check it."
        return None
