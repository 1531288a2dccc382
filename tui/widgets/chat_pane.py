"""One side of the chat: a title, the conversation, and the answer being streamed into it."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Label, Static


class ChatPane(VerticalScroll):
    DEFAULT_CSS = """
    ChatPane { width: 1fr; border: round $panel; padding: 0 1; }
    ChatPane > .pane-title { text-style: bold; }
    ChatPane > .user { color: $accent; margin-top: 1; }
    ChatPane > .assistant { margin-bottom: 0; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.history: list[dict[str, str]] = []
        self._answer: Static | None = None
        self._answer_text = ""

    def compose(self):
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
        self.history.append({"role": "assistant", "content": self._answer_text.strip()})
        if self._answer is not None and not self._answer_text.strip():
            self._answer.update(Text("(empty answer)", style="dim"))
        self._answer = None

    def reset(self) -> None:
        self.history = []
        for child in list(self.children)[1:]:
            child.remove()
