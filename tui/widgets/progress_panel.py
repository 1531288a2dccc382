"""Where a run is: a progress bar with the step count and ETA, and the numbers of the latest step."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar

from core.events import duration


class ProgressPanel(Vertical):
    """Fed step events (`step`) and the run's state (`state`): the ETA shows while it trains, a done run's bar is full.

    The ETA is the trainer's own (from its step times), not the bar's: a reattached screen has
    no clock of its own for a run that started before it.
    """

    DEFAULT_CSS = """
    ProgressPanel { height: auto; padding: 0 1; }
    ProgressPanel > Horizontal { height: 1; }
    ProgressPanel ProgressBar { width: auto; }
    ProgressPanel #step-count { padding: 0 0 0 2; }
    ProgressPanel #step-numbers { color: $text-muted; }
    """

    step: reactive[dict[str, Any] | None] = reactive(None, init=False)
    state: reactive[str] = reactive("pending", init=False)

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ProgressBar(total=None, show_eta=False, id="step-bar")
            yield Label("waiting for the first step", id="step-count")
        yield Label("", id="step-numbers")

    def watch_step(self, event: dict[str, Any] | None) -> None:
        if event is None:
            return
        max_steps = event.get("max_steps") or None
        self.query_one(ProgressBar).update(total=max_steps, progress=event["step"])
        count = f"step {event['step']}/{max_steps or '?'}"
        if self.state == "running":
            count += f" · ETA {duration(event.get('eta_s'))}"
        self.query_one("#step-count", Label).update(f"{count} · elapsed {duration(event.get('elapsed_s'))}")
        numbers = []
        if event.get("loss") is not None:
            numbers.append(f"loss {event['loss']:.4f}")
        if event.get("lr") is not None:
            numbers.append(f"lr {event['lr']:.2e}")
        if event.get("tokens_per_second"):
            numbers.append(f"{event['tokens_per_second']:,.0f} tokens/s")
        if event.get("epoch") is not None:
            numbers.append(f"epoch {event['epoch']:.2f}")
        if event.get("grad_norm") is not None:
            numbers.append(f"grad norm {event['grad_norm']:.3f}")
        self.query_one("#step-numbers", Label).update(" · ".join(numbers))

    def watch_state(self, state: str) -> None:
        if self.step is not None:
            self.watch_step(self.step)
        if state == "done":
            bar = self.query_one(ProgressBar)
            bar.update(total=bar.total or 1, progress=bar.total or 1)
