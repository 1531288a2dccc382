"""One side of the chat: a title, the conversation, and the answer being streamed into it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Label, Static


class ChatPane(VerticalScroll):
    """A conversation of its own: `history` is what the model is sent (user and assistant turns)."""

    DEFAULT_CSS = """
    ChatPane { width: 1fr; border: round $panel; padding: 0 1; }
    ChatPane > .pane-title { text-style: bold; }
    ChatPane > .user { color: $accent; margin-top: 1; }
    ChatPane > .interrupted { color: $text-muted; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.history: list[dict[str, str]] = []
        self._answer: Static | None = None
        self._answer_text = ""

    def compose(self) -> ComposeResult:
        yield Label(self.title_text, classes="pane-title")

    def add_user(self, text: str) -> None:
        self.history.append({"role": "user", "content": text})
        self.mount(Static(Text(f"you: {text}"), classes="user"))
        self._answer_text = ""
        self._answer = Static(Text("…"), classes="assistant")
        self.mount(self._answer)
        self.scroll_end(animate=False)

    def add_piece(self, piece: str) -> None:
        self._answer_text += piece
        if self._answer is not None:
            self._answer.update(Text(self._answer_text))
        self.scroll_end(animate=False)

    def finish(self) -> None:
        """The answer is complete: it joins the history."""
        self.history.append({"role": "assistant", "content": self._answer_text.strip()})
        if self._answer is not None and not self._answer_text.strip():
            self._answer.update(Text("(empty answer)", style="dim"))
        self._answer = None

    def abandon(self) -> None:
        """The answer will not come (generation failed): the unanswered message leaves the history."""
        if self._answer is None:
            return
        if self.history and self.history[-1]["role"] == "user":
            self.history.pop()
        self._answer.update(Text(f"{self._answer_text}(no answer)"))
        self._answer.add_class("interrupted")
        self._answer = None

    def reset(self) -> None:
        self.history = []
        self._answer = None
        for child in list(self.children)[1:]:
            child.remove()
