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
from textual.widgets import Checkbox, Footer, Input, Label, LoadingIndicator
from textual.worker import Worker, get_current_worker

from core.errors import UserError
from tui.screens.base import WizardScreen
from tui.widgets.chat_pane import ChatPane

DEFAULT_MAX_NEW_TOKENS = 128


def short_model_name(model: str) -> str:
    """A local folder by its name, a Hub id as it is."""
    path = Path(model)
    return path.name if path.is_absolute() else model


class ChatScreen(WizardScreen):
    AUTO_FOCUS = "#prompt"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+b", "toggle_compare", "Compare", id="toggle-compare",
                tooltip="Show the base model's answers beside the fine-tuned ones"),
        Binding("ctrl+t", "toggle_adapter", "Adapter", id="toggle-adapter",
                tooltip="In a single pane: chat with the fine-tuned model (adapter on) or the base (adapter off)"),
        Binding("ctrl+r", "reset", "New chat", id="reset", tooltip="Clear both conversations"),
        Binding("ctrl+o", "export", "Export", id="export", tooltip="Save, merge or publish the adapter"),
        Binding("escape", "back", "Back", id="back", tooltip="Back to the run"),
    ]
    # Screen CSS (not DEFAULT_CSS) so these rules outrank the app stylesheet's general ones.
    CSS = """
    ChatScreen #chat-title { text-style: bold; padding: 0 1; width: 1fr; }
    ChatScreen #chat-options { height: 1; padding: 0 1; }
    ChatScreen #chat-options Checkbox { margin-right: 2; }
    ChatScreen #chat-options Label { padding: 0 1 0 0; }
    ChatScreen #chat-options Input { width: 8; margin-right: 2; }
    ChatScreen #chat-status { padding: 0 1; width: 1fr; color: $text-muted; }
    ChatScreen #chat-panes { height: 1fr; }
    ChatScreen #prompt { margin: 0 1; }
    ChatScreen LoadingIndicator { height: 1; }
    """

    @dataclass
    class Loaded(Message):
        """The model and the adapter are in memory."""

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
        # A message typed while the model loads: sent once it is loaded.
        self.waiting_text: str | None = None
        self.load_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Chat with the run {self.run_dir}", id="chat-title")
        with Horizontal(id="chat-options"):
            yield Checkbox("side by side", value=True, id="compare", compact=True,
                           tooltip="Answer with the base model too, beside the fine-tuned one (Ctrl+B)")
            yield Checkbox("adapter", value=True, id="adapter", compact=True, disabled=True,
                           tooltip="With one pane: the fine-tuned model (on) or the base model (off) (Ctrl+T)")
            yield Label("temperature")
            yield Input("0", id="temperature", compact=True, tooltip="0 for greedy (deterministic) answers, up to 2")
            yield Label("max new tokens")
            yield Input(str(DEFAULT_MAX_NEW_TOKENS), id="max-new-tokens", compact=True, type="integer",
                        tooltip="The longest answer, in tokens")
        yield LoadingIndicator(id="chat-loading")
        yield Label("Loading the model and the adapter...", id="chat-status")
        with Horizontal(id="chat-panes"):
            yield ChatPane("Base model (adapter off)", id="pane-base")
            yield ChatPane("Fine-tuned (adapter on)", id="pane-tuned")
        yield Input(placeholder="Type a message and press Enter", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    # -- the model -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-load", description="loading the model")
    def load(self) -> None:
        from core.infer import ChatSession

        self.session = ChatSession(self.run_dir)
        self.post_message(self.Loaded())

    @on(Loaded)
    def loaded(self) -> None:
        self.query_one("#chat-loading").display = False
        config = self.session.config
        device = getattr(self.session.model, "device", "")
        self.query_one("#chat-status", Label).update(
            f"{short_model_name(config.model)} + adapter ({config.method}) on {device} · Enter sends your message")
        if self.waiting_text is not None:
            text, self.waiting_text = self.waiting_text, None
            self.send(text)

    # -- sending and streaming -----------------------------------------------------------------

    def generation_settings(self) -> tuple[float, int]:
        try:
            temperature = float(self.query_one("#temperature", Input).value or 0)
            max_new_tokens = int(self.query_one("#max-new-tokens", Input).value or DEFAULT_MAX_NEW_TOKENS)
        except ValueError:
            raise UserError("temperature must be a number (0 for greedy) and max new tokens a whole number.") from None
        if not 0 <= temperature <= 2 or not 1 <= max_new_tokens <= 4096:
            raise UserError("temperature must be between 0 and 2, and max new tokens between 1 and 4096.")
        return temperature, max_new_tokens

    def answering_panes(self) -> list[str]:
        """Which panes answer: both side by side (base first), else the one the adapter switch picks."""
        if self.query_one("#compare", Checkbox).value:
            return ["base", "tuned"]
        return ["tuned"] if self.query_one("#adapter", Checkbox).value else ["base"]

    @on(Input.Submitted, "#prompt")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.load_error:
            self.notify(self.load_error, severity="error", timeout=10)
            return
        if self.busy or self.waiting_text is not None:
            self.notify("Still answering the last message; wait for it to finish.", severity="warning")
            return
        try:
            self.generation_settings()
        except UserError as error:
            self.notify(str(error), severity="error")
            return
        event.input.value = ""
        if self.session is None:
            self.waiting_text = text
            self.query_one("#chat-status", Label).update("Loading the model... your message is sent once it is loaded.")
            return
        self.send(text)

    def send(self, text: str) -> None:
        try:
            temperature, max_new_tokens = self.generation_settings()
        except UserError as error:
            self.notify(str(error), severity="error")
            return
        panes = self.answering_panes()
        for name in panes:
            self.query_one(f"#pane-{name}", ChatPane).add_user(text)
        self.busy = True
        # Each pane is its own conversation: its history, its answers.
        histories = {name: list(self.query_one(f"#pane-{name}", ChatPane).history) for name in panes}
        self.generate(histories, temperature, max_new_tokens)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-generate", description="generating an answer")
    def generate(self, histories: dict[str, list[dict[str, str]]], temperature: float, max_new_tokens: int) -> None:
        worker = get_current_worker()
        try:
            for name, history in histories.items():
                for piece in self.session.stream(history, adapter=name == "tuned",
                                                 max_new_tokens=max_new_tokens, temperature=temperature):
                    if worker.is_cancelled:
                        return
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

    # -- options -------------------------------------------------------------------------------

    @on(Checkbox.Changed)
    def options_changed(self) -> None:
        compare = self.query_one("#compare", Checkbox).value
        adapter = self.query_one("#adapter", Checkbox)
        adapter.disabled = compare
        self.query_one("#pane-base").display = compare or not adapter.value
        self.query_one("#pane-tuned").display = compare or adapter.value

    def action_toggle_compare(self) -> None:
        compare = self.query_one("#compare", Checkbox)
        compare.value = not compare.value

    def action_toggle_adapter(self) -> None:
        if self.query_one("#compare", Checkbox).value:
            self.query_one("#compare", Checkbox).value = False  # one pane, then switch it
        adapter = self.query_one("#adapter", Checkbox)
        adapter.value = not adapter.value

    def action_reset(self) -> None:
        if self.busy:
            self.notify("Still answering; clear the chat when the answer is done.", severity="warning")
            return
        for pane in self.query(ChatPane):
            pane.reset()

    # -- navigation and errors -----------------------------------------------------------------

    def action_export(self) -> None:
        from tui.screens.export import ExportScreen

        self.app.push_screen(ExportScreen(self.run_dir))

    def action_back(self) -> None:
        self.app.pop_screen()

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.busy = False
        self.waiting_text = None
        if worker.group == "chat-load":
            self.load_error = message
        for pane in self.query(ChatPane):
            pane.abandon()
        self.query_one("#chat-loading").display = False
        self.query_one("#chat-status", Label).update(message)
        self.notify(message, severity="error", timeout=10)
