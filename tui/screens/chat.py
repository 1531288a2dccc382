"""Chat: the fine-tuned model and the base side by side, answers streamed; one model in memory,
the adapter switched off for the base's answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Input, Label, LoadingIndicator, Switch
from textual.worker import Worker

from core.errors import UserError
from tui.screens.base import WizardScreen
from tui.widgets.chat_pane import ChatPane


class ChatScreen(WizardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+b", "toggle_compare", "Base side by side", id="toggle-compare",
                tooltip="Show the base model's answers beside the fine-tuned ones"),
        Binding("ctrl+r", "reset", "New chat", id="reset", tooltip="Clear both conversations"),
        Binding("ctrl+o", "export", "Export", id="export", tooltip="Save, merge or publish the adapter"),
        Binding("escape", "back", "Back", id="back", tooltip="Back to the run"),
    ]
    DEFAULT_CSS = """
    ChatScreen #chat-panes { height: 1fr; }
    ChatScreen #chat-options { height: auto; padding: 0 1; }
    ChatScreen #chat-options Label { padding: 1 1 0 1; }
    ChatScreen #chat-options Input { width: 12; }
    ChatScreen #chat-status { padding: 0 1; }
    ChatScreen #prompt { margin: 0 1; }
    """

    @dataclass
    class Loaded(Message):
        pass

    @dataclass
    class Piece(Message):
        pane: str
        text: str

    @dataclass
    class Finished(Message):
        pane: str

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.session = None
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Label(f"Chat with {self.run_dir}", id="chat-title")
        with Horizontal(id="chat-options"):
            yield Label("base side by side")
            yield Switch(value=True, id="compare", tooltip="Also answer with the adapter off (Ctrl+B)")
            yield Label("temperature")
            yield Input("0", id="temperature", tooltip="0 for greedy (deterministic) answers")
            yield Label("max new tokens")
            yield Input("128", id="max-new-tokens", type="integer")
        yield LoadingIndicator(id="chat-loading")
        yield Label("Loading the model and the adapter...", id="chat-status")
        with Horizontal(id="chat-panes"):
            yield ChatPane("Base model (adapter off)", id="pane-base")
            yield ChatPane("Fine-tuned (adapter on)", id="pane-tuned")
        yield Input(placeholder="Type a message and press Enter", id="prompt", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-load", description="loading the model")
    def load(self) -> None:
        from core.infer import ChatSession

        self.session = ChatSession(self.run_dir)
        self.post_message(self.Loaded())

    @on(Loaded)
    def loaded(self) -> None:
        self.query_one("#chat-loading").display = False
        config = self.session.config
        model = Path(config.model).name if Path(config.model).is_dir() else config.model
        self.query_one("#chat-status", Label).update(
            f"{model} · {config.method} · type a message; Ctrl+B toggles the base model's answers")
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = False
        prompt.focus()

    def generation_settings(self) -> tuple[float, int]:
        try:
            temperature = float(self.query_one("#temperature", Input).value or 0)
            max_new_tokens = int(self.query_one("#max-new-tokens", Input).value or 128)
        except ValueError:
            raise UserError("temperature must be a number (0 for greedy) and max new tokens a whole number.") from None
        if not 0 <= temperature <= 2 or not 1 <= max_new_tokens <= 4096:
            raise UserError("temperature must be between 0 and 2, max new tokens between 1 and 4096.")
        return temperature, max_new_tokens

    @on(Input.Submitted, "#prompt")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.session is None:
            return
        if self.busy:
            self.notify("Still answering; wait for it to finish.", severity="warning")
            return
        try:
            temperature, max_new_tokens = self.generation_settings()
        except UserError as error:
            self.notify(str(error), severity="error")
            return
        event.input.value = ""
        compare = self.query_one("#compare", Switch).value
        panes = ["base", "tuned"] if compare else ["tuned"]
        for name in panes:
            self.query_one(f"#pane-{name}", ChatPane).add_user(text)
        self.busy = True
        histories = {name: list(self.query_one(f"#pane-{name}", ChatPane).history) for name in panes}
        self.generate(histories, temperature, max_new_tokens)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-generate", description="generating an answer")
    def generate(self, histories: dict[str, list[dict[str, str]]], temperature: float, max_new_tokens: int) -> None:
        try:
            for name, history in histories.items():
                for piece in self.session.stream(history, adapter=name == "tuned",
                                                 max_new_tokens=max_new_tokens, temperature=temperature):
                    self.post_message(self.Piece(name, piece))
                self.post_message(self.Finished(name))
        finally:
            self.busy = False

    @on(Piece)
    def piece(self, message: Piece) -> None:
        self.query_one(f"#pane-{message.pane}", ChatPane).add_piece(message.text)

    @on(Finished)
    def finished(self, message: Finished) -> None:
        self.query_one(f"#pane-{message.pane}", ChatPane).finish()

    @on(Switch.Changed, "#compare")
    def compare_changed(self, event: Switch.Changed) -> None:
        self.query_one("#pane-base").display = event.value

    def action_toggle_compare(self) -> None:
        switch = self.query_one("#compare", Switch)
        switch.value = not switch.value

    def action_reset(self) -> None:
        for pane in self.query(ChatPane):
            pane.reset()

    def action_export(self) -> None:
        from tui.screens.export import ExportScreen

        self.app.push_screen(ExportScreen(self.run_dir))

    def action_back(self) -> None:
        self.app.pop_screen()

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.busy = False
        self.query_one("#chat-loading").display = False
        self.query_one("#chat-status", Label).update(message)
        self.notify(message, severity="error", timeout=10)
