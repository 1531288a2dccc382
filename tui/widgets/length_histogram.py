"""How long the examples are in tokens, and how many max_length would cut."""

from __future__ import annotations

from statistics import median

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Label, Sparkline

BINS = 48


def histogram(lengths: list[int], top: int, bins: int = BINS) -> list[float]:
    counts = [0.0] * bins
    for length in lengths:
        counts[min(bins - 1, length * bins // max(top, 1))] += 1
    return counts


def cut_count(lengths: list[int], max_length: int) -> int:
    return sum(1 for length in lengths if length > max_length)


def describe(lengths: list[int], max_length: int) -> str:
    if not lengths:
        return "No examples counted."
    cut = cut_count(lengths, max_length)
    share = f" ({cut / len(lengths):.1%})" if cut else ""
    cut_text = (f"{cut}{share} are longer than max_length {max_length} and would be cut" if cut
                else f"none is longer than max_length {max_length}")
    return (f"{len(lengths)} examples counted: median {median(lengths):.0f}, longest {max(lengths)} tokens; "
            f"{cut_text}.")


class LengthHistogram(Vertical):
    lengths: reactive[list[int]] = reactive(list)
    max_length: reactive[int] = reactive(1024)

    def compose(self) -> ComposeResult:
        yield Sparkline([], id="length-bars")
        yield Label("", id="length-scale")
        yield Label("", id="length-summary")

    def watch_lengths(self) -> None:
        self.refresh_view()

    def watch_max_length(self) -> None:
        self.refresh_view()

    def refresh_view(self) -> None:
        if not self.is_mounted:
            return
        top = max([*self.lengths, self.max_length])
        self.query_one(Sparkline).data = histogram(self.lengths, top)
        scale = f"examples by length in tokens, from 0 (left) to {top} (right)" if self.lengths else ""
        self.query_one("#length-scale", Label).update(scale)
        self.query_one("#length-summary", Label).update(describe(self.lengths, self.max_length))

    def on_mount(self) -> None:
        self.refresh_view()
