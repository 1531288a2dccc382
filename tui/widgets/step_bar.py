"""Where the user is in the wizard: Token › Model › Method › Dataset › Settings › Review."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import STEP_TITLES, STEPS


class StepBar(Widget):
    current: reactive[str] = reactive("login")

    def __init__(self, current: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current = current

    def render(self) -> Text:
        text = Text(" lora-wizard  ", style="bold")
        reached = True
        for number, step in enumerate(STEPS, 1):
            if number > 1:
                text.append(" › ", style="dim")
            label = f"{number} {STEP_TITLES[step]}"
            if step == self.current:
                text.append(f" {label} ", style="reverse bold")
                reached = False
            else:
                text.append(label, style="" if reached else "dim")
        return text
