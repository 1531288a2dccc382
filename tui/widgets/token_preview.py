"""One training example as the model sees it: trained tokens highlighted, masked (prompt) tokens dimmed."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

TRAINED_STYLE = "bold green"
MASKED_STYLE = "dim"


def legend() -> Text:
    return Text.assemble(("trained on (loss)", TRAINED_STYLE), "   ", ("masked (no loss)", MASKED_STYLE))


class TokenPreview(Widget):
    """Spans are (text, trained) pairs, as core.data.render_preview returns them."""

    spans: reactive[list[tuple[str, bool]]] = reactive(list, layout=True)

    def __init__(self, spans: list[tuple[str, bool]], *, title: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.spans = spans
        self.border_title = title

    def render(self) -> Text:
        text = Text()
        for piece, trained in self.spans:
            text.append(piece, style=TRAINED_STYLE if trained else MASKED_STYLE)
        text.rstrip()  # the template's closing newline would be an empty line in the box
        return text
