"""A model's facts at a glance: size, architecture, licence, and whether the token may download it."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import ModelInfo


def human_count(count: int | None) -> str:
    if count is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def human_bytes(size: int | None) -> str:
    if size is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


class ModelSummaryView(Widget):
    info: reactive[ModelInfo | None] = reactive(None, layout=True)

    def render(self) -> RenderableType:
        info = self.info
        if info is None:
            return Text("")
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("Model", f"{info.id}  ({'Hub' if info.source == 'hub' else 'local folder'})")
        architecture = info.architecture or "unknown"
        if info.model_type:
            architecture += f" ({info.model_type})"
        table.add_row("Architecture", architecture)
        table.add_row("Parameters", human_count(info.parameters))
        table.add_row("Weights", human_bytes(info.size_bytes))
        table.add_row("Licence", info.license or "not stated")
        access = Text("")
        if info.gated and info.can_access:
            access = Text("Gated: this token has access.", style="green")
        elif info.gated:
            access = Text.assemble(("Gated: this token has no access. ", "bold red"),
                                   f"Request it at {info.access_url}, then check again.")
        parts: list[RenderableType] = [table]
        if access.plain:
            parts.append(access)
        return Group(*parts)
