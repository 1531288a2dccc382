"""Export: the adapter as saved, a merged 16-bit model (with the engine's parity check), a Hub push."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Footer, Input, Label, Log, Static
from textual.worker import Worker

from tui.screens.base import WizardScreen


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


class ExportScreen(WizardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5", "merge", "Merge", id="merge", tooltip="Save a merged 16-bit model (checked against the adapter)"),
        Binding("f6", "push", "Push to Hub", id="push", tooltip="Publish the adapter (or the merged model) on the Hub"),
        Binding("escape", "back", "Back", id="back", tooltip="Back to the chat"),
    ]
    DEFAULT_CSS = """
    ExportScreen #export-body { height: 1fr; padding: 1 2 0 2; }
    ExportScreen .section { text-style: bold; margin-top: 1; }
    ExportScreen Horizontal { height: auto; }
    ExportScreen Input { width: 1fr; }
    ExportScreen #export-log { height: 10; border: round $panel; }
    """

    @dataclass
    class Progress(Message):
        text: str

    @dataclass
    class Merged(Message):
        folder: Path
        ok: bool
        summary: str

    @dataclass
    class Pushed(Message):
        url: str

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.merged_folder: Path | None = None

    def compose(self) -> ComposeResult:
        adapter = self.run_dir / "adapter"
        with VerticalScroll(id="export-body"):
            yield Label("Adapter", classes="section")
            yield Static(f"Saved in {adapter} ({_folder_size(adapter) / 1e6:.1f} MB): PEFT adapter, tokenizer, chat "
                         "template and model card. Load it with peft's AutoPeftModelForCausalLM.", id="adapter-info")
            yield Label("Merge into a 16-bit model", classes="section")
            with Horizontal():
                yield Input(str(self.run_dir / "merged"), id="merge-dir", tooltip="Folder for the merged model")
                yield Button("Merge (F5)", id="merge-button", variant="primary", compact=True)
            yield Label("", id="merge-result")
            yield Label("Push to the Hugging Face Hub", classes="section")
            with Horizontal():
                yield Input(placeholder="your-name/model-name", id="repo-id")
                yield Checkbox("private", value=True, id="private")
                yield Button("Push (F6)", id="push-button", compact=True)
            yield Label("", id="push-result")
            yield Log(id="export-log")
        yield Label("", id="error", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#error").display = False

    def say(self, text: str) -> None:
        self.post_message(self.Progress(text))

    @on(Progress)
    def progress(self, message: Progress) -> None:
        self.query_one("#export-log", Log).write_line(message.text)

    # -- merge ---------------------------------------------------------------------------------

    def action_merge(self) -> None:
        folder = self.query_one("#merge-dir", Input).value.strip()
        if not folder:
            self.show_error("Give a folder for the merged model.")
            return
        self.show_error("")
        self.query_one("#merge-button").disabled = True
        self.query_one("#merge-result", Label).update("Merging... (this loads the model twice: a minute on big models)")
        self.merge(Path(folder))

    @on(Button.Pressed, "#merge-button")
    def merge_pressed(self) -> None:
        self.action_merge()

    @work(thread=True, exclusive=True, exit_on_error=False, group="merge", description="merging the adapter")
    def merge(self, folder: Path) -> None:
        from core.export import merge

        report = merge(self.run_dir, folder, progress=self.say)
        self.post_message(self.Merged(report.out_dir, report.ok, report.summary()))

    @on(Merged)
    def merged(self, message: Merged) -> None:
        self.query_one("#merge-button").disabled = False
        if message.ok:
            self.merged_folder = message.folder
            self.query_one("#merge-result", Label).update(f"✓ Merged model in {message.folder}: {message.summary}.")
        else:
            self.query_one("#merge-result", Label).update(
                f"✗ Saved in {message.folder}, but {message.summary}: prefer the adapter.")

    # -- push ----------------------------------------------------------------------------------

    def action_push(self) -> None:
        repo_id = self.query_one("#repo-id", Input).value.strip()
        if not repo_id or repo_id.count("/") != 1 or " " in repo_id:
            self.show_error("Give the Hub repository as your-name/model-name.")
            return
        self.show_error("")
        private = self.query_one("#private", Checkbox).value
        self.query_one("#push-button").disabled = True
        what = f"the merged model in {self.merged_folder}" if self.merged_folder else "the adapter"
        self.query_one("#push-result", Label).update(f"Pushing {what} to {repo_id} ({'private' if private else 'public'})...")
        self.push(repo_id, private)

    @on(Button.Pressed, "#push-button")
    def push_pressed(self) -> None:
        self.action_push()

    @work(thread=True, exclusive=True, exit_on_error=False, group="push", description="pushing to the Hub")
    def push(self, repo_id: str, private: bool) -> None:
        from core.export import push

        url = push(self.run_dir, repo_id, private=private, folder=self.merged_folder, progress=self.say)
        self.post_message(self.Pushed(url))

    @on(Pushed)
    def pushed(self, message: Pushed) -> None:
        self.query_one("#push-button").disabled = False
        self.query_one("#push-result", Label).update(f"✓ Pushed: {message.url}")

    # -- errors and navigation -----------------------------------------------------------------

    def show_error(self, message: str) -> None:
        error = self.query_one("#error", Label)
        error.update(message)
        error.display = bool(message)

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.query_one("#merge-button").disabled = False
        self.query_one("#push-button").disabled = False
        self.show_error(message)

    def action_back(self) -> None:
        self.app.pop_screen()

