"""Export: the adapter as saved (and a copy of it), a merged model checked against adapter-on-base,
a push to the Hub (private by default, with the model card)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Footer, Input, Label, Log, Static
from textual.worker import Worker

from core.errors import ConfigError, UserError
from tui.screens.base import WizardScreen


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def copy_adapter(adapter_dir: Path, destination: Path) -> int:
    """Copies the adapter folder to `destination` (new or empty); returns the bytes copied."""
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise UserError(f"{destination} already exists and is not an empty folder; choose a new folder.")
    if destination.resolve() == adapter_dir.resolve():
        raise UserError("that is the adapter's own folder; choose another one.")
    try:
        shutil.copytree(adapter_dir, destination, dirs_exist_ok=True)
    except OSError as error:
        raise UserError(f"could not copy the adapter to {destination} ({error.strerror or error}); "
                        "check the folder is writable and the disk has space.") from None
    return folder_size(destination)


class ExportScreen(WizardScreen):
    AUTO_FOCUS = "#copy-dir"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "copy_adapter", "Copy adapter", id="copy-adapter",
                tooltip="Copy the adapter folder (weights, tokenizer, model card) to the folder given"),
        Binding("ctrl+g", "merge", "Merge", id="merge",
                tooltip="Save the base with the adapter merged in, checked to answer like adapter-on-base"),
        Binding("ctrl+y", "push", "Push to Hub", id="push",
                tooltip="Publish the adapter (or the merged model, once made) on the Hugging Face Hub"),
        Binding("escape", "back", "Back", id="back", tooltip="Back to the chat"),
    ]
    # Screen CSS (not DEFAULT_CSS) so these rules outrank the app stylesheet's general ones.
    CSS = """
    ExportScreen #export-title { text-style: bold; padding: 0 1; width: 1fr; }
    ExportScreen #export-body { height: 1fr; padding: 0 1; }
    ExportScreen .section { text-style: bold; margin-top: 1; }
    ExportScreen .note { color: $text-muted; width: 1fr; }
    ExportScreen .row { height: 1; margin-top: 1; }
    ExportScreen .row Label { width: 10; }
    ExportScreen .row Input { width: 1fr; }
    ExportScreen .row Checkbox, ExportScreen .row Button { margin-left: 2; }
    ExportScreen .result { width: 1fr; }
    ExportScreen #export-log { height: auto; max-height: 8; min-height: 3; border: round $panel; margin-top: 1; }
    ExportScreen #error { height: auto; }
    """

    @dataclass
    class Progress(Message):
        text: str

    @dataclass
    class Copied(Message):
        folder: Path
        size: int

    @dataclass
    class Merged(Message):
        folder: Path
        dtype: str
        ok: bool
        summary: str
        prompts: list[str] = field(default_factory=list)
        matches: list[bool] = field(default_factory=list)

    @dataclass
    class Pushed(Message):
        url: str

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.adapter_dir = self.run_dir / "adapter"
        self.merged_folder: Path | None = None
        self.method = self.read_method()

    def read_method(self) -> str | None:
        from core.config import load_config

        try:
            return load_config(self.run_dir / "config.yaml").method
        except ConfigError:
            return None

    def compose(self) -> ComposeResult:
        yield Label(f"Export the run {self.run_dir}", id="export-title")
        with VerticalScroll(id="export-body"):
            yield Label("Adapter", classes="section")
            if (self.adapter_dir / "adapter_config.json").exists():
                info = (f"In {self.adapter_dir} ({megabytes(folder_size(self.adapter_dir))}): PEFT adapter, tokenizer, "
                        "chat template, model card. Load it with peft's AutoPeftModelForCausalLM.")
            else:
                info = f"No adapter in {self.adapter_dir} yet: it is saved when training finishes."
            yield Static(info, id="adapter-info", classes="note")
            with Horizontal(classes="row"):
                yield Label("Copy to")
                yield Input(placeholder="a new folder, e.g. ~/adapters/my-run", id="copy-dir", compact=True,
                            tooltip="Enter (or Ctrl+S) copies the adapter folder here")
                yield Button("Copy (Ctrl+S)", id="copy-button", compact=True)
            yield Label("", id="copy-result", classes="result")

            yield Label("Merged model", classes="section")
            yield Static("The adapter added into the base weights: one model, no peft needed to load it. "
                         "Checked before it counts: greedy answers merged must equal adapter-on-base.", classes="note")
            with Horizontal(classes="row"):
                yield Label("Folder")
                yield Input(str(self.run_dir / "merged"), id="merge-dir", compact=True,
                            tooltip="Enter (or Ctrl+G) merges into this new folder")
                if self.method in ("qlora", "lora-8bit"):
                    yield Checkbox("into the original weights", id="into-original", compact=True,
                                   tooltip="Merge into the original 16-bit weights, not the dequantized ones the "
                                           "adapter was trained on: answers may drift")
                yield Button("Merge (Ctrl+G)", id="merge-button", variant="primary", compact=True)
            yield Label("", id="merge-result", classes="result")

            yield Label("Hugging Face Hub", classes="section")
            with Horizontal(classes="row"):
                yield Label("Repo")
                yield Input(placeholder="your-name/model-name", id="repo-id", compact=True,
                            tooltip="Enter (or Ctrl+Y) pushes; the token comes from lora-wizard login")
                yield Checkbox("private", value=True, id="private", compact=True,
                               tooltip="Only you (and your organisation) can see a private repository")
                yield Button("Push (Ctrl+Y)", id="push-button", compact=True)
            yield Label("", id="push-result", classes="result")
            yield Log(id="export-log")
        yield Label("", id="error", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#error").display = False
        self.query_one("#export-log").display = False

    def say(self, text: str) -> None:
        """Progress from a worker (any thread) to the log."""
        self.post_message(self.Progress(text))

    @on(Progress)
    def progress(self, message: Progress) -> None:
        log = self.query_one("#export-log", Log)
        log.display = True
        log.write_line(message.text)

    def busy(self, button: str, busy: bool) -> None:
        self.query_one(f"#{button}-button", Button).disabled = busy

    # -- copy ----------------------------------------------------------------------------------

    def action_copy_adapter(self) -> None:
        text = self.query_one("#copy-dir", Input).value.strip()
        if not text:
            self.show_error("Give a folder to copy the adapter to.")
            return
        if not (self.adapter_dir / "adapter_config.json").exists():
            self.show_error("There is no adapter to copy yet; it is saved when training finishes.")
            return
        self.show_error("")
        self.busy("copy", True)
        self.query_one("#copy-result", Label).update("Copying...")
        self.copy(Path(os.path.expanduser(text)))

    @on(Button.Pressed, "#copy-button")
    @on(Input.Submitted, "#copy-dir")
    def copy_requested(self) -> None:
        self.action_copy_adapter()

    @work(thread=True, exclusive=True, exit_on_error=False, group="copy", description="copying the adapter")
    def copy(self, destination: Path) -> None:
        size = copy_adapter(self.adapter_dir, destination)
        self.post_message(self.Copied(destination, size))

    @on(Copied)
    def copied(self, message: Copied) -> None:
        self.busy("copy", False)
        self.query_one("#copy-result", Label).update(f"✓ Copied to {message.folder} ({megabytes(message.size)}).")

    # -- merge ---------------------------------------------------------------------------------

    def action_merge(self) -> None:
        folder = self.query_one("#merge-dir", Input).value.strip()
        if not folder:
            self.show_error("Give a folder for the merged model.")
            return
        self.show_error("")
        into_original = bool(self.query("#into-original") and self.query_one("#into-original", Checkbox).value)
        self.busy("merge", True)
        self.query_one("#merge-result", Label).update("Merging, then checking the answers (loads the model twice)...")
        self.merge(Path(os.path.expanduser(folder)), into_original)

    @on(Button.Pressed, "#merge-button")
    @on(Input.Submitted, "#merge-dir")
    def merge_requested(self) -> None:
        self.action_merge()

    @work(thread=True, exclusive=True, exit_on_error=False, group="merge", description="merging the adapter")
    def merge(self, folder: Path, into_original: bool) -> None:
        from core.export import merge

        report = merge(self.run_dir, folder, into_original=into_original, progress=self.say)
        self.post_message(self.Merged(report.out_dir, report.dtype, report.ok, report.summary(),
                                      list(report.prompts), list(report.matches)))

    @on(Merged)
    def merged(self, message: Merged) -> None:
        self.busy("merge", False)
        for prompt, match in zip(message.prompts, message.matches):
            self.say(f"{'✓ same' if match else '✗ different'} answer: {prompt[:60]}")
        result = self.query_one("#merge-result", Label)
        if message.ok:
            self.merged_folder = message.folder
            result.update(f"✓ Merged {message.dtype} model in {message.folder}: {message.summary}.")
            result.set_class(False, "error")
        else:
            result.update(f"✗ Saved in {message.folder}, but only {message.summary}: "
                          "publish the adapter instead, or compare with the other merge.")
            result.set_class(True, "error")

    # -- push ----------------------------------------------------------------------------------

    def action_push(self) -> None:
        repo_id = self.query_one("#repo-id", Input).value.strip()
        if not repo_id or repo_id.count("/") != 1 or " " in repo_id or repo_id.startswith("/") or repo_id.endswith("/"):
            self.show_error("Give the Hub repository as your-name/model-name.")
            return
        self.show_error("")
        private = self.query_one("#private", Checkbox).value
        self.busy("push", True)
        what = f"the merged model in {self.merged_folder}" if self.merged_folder else "the adapter"
        self.query_one("#push-result", Label).update(
            f"Pushing {what} to {repo_id} ({'private' if private else 'public'})...")
        self.push(repo_id, private)

    @on(Button.Pressed, "#push-button")
    @on(Input.Submitted, "#repo-id")
    def push_requested(self) -> None:
        self.action_push()

    @work(thread=True, exclusive=True, exit_on_error=False, group="push", description="pushing to the Hub")
    def push(self, repo_id: str, private: bool) -> None:
        from core.export import push

        url = push(self.run_dir, repo_id, private=private, folder=self.merged_folder, progress=self.say)
        self.post_message(self.Pushed(url))

    @on(Pushed)
    def pushed(self, message: Pushed) -> None:
        self.busy("push", False)
        self.query_one("#push-result", Label).update(f"✓ Pushed: {message.url}")

    # -- errors and navigation -----------------------------------------------------------------

    def show_error(self, message: str) -> None:
        error = self.query_one("#error", Label)
        error.update(message)
        error.display = bool(message)

    def worker_failed(self, worker: Worker, message: str) -> None:
        results = {"copy": "#copy-result", "merge": "#merge-result", "push": "#push-result"}
        if worker.group in results:
            self.busy(worker.group, False)
            self.query_one(results[worker.group], Label).update("")
        self.show_error(message)

    def action_back(self) -> None:
        self.app.pop_screen()
