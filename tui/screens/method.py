"""Method: LoRA, 8-bit LoRA and QLoRA side by side, with each one's memory estimate against this machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Label, Static
from textual.worker import Worker

from core.config import METHOD_HELP, METHODS
from tui.screens.base import WizardStep

VERDICT_TEXT = {"fits": ("fits", "green"), "tight": ("tight", "yellow"), "no": ("does not fit", "red")}


def gib(value: float) -> str:
    return f"{value:.1f} GiB" if value >= 10 else f"{value:.2f} GiB"


class MethodScreen(WizardStep):
    STEP = "method"

    @dataclass
    class Estimated(Message):
        estimates: dict[str, Any] | None  # method -> tui.engine.MethodEstimate; None without an estimator
        hardware: tuple[list[Any], float | None] | None  # detected now, when the state did not know yet

    BINDINGS = [
        Binding("g", "cycle_gpus", "GPUs", id="cycle-gpus",
                tooltip="Train on one GPU, all of them with DDP (a copy each) or with FSDP (weights sharded)"),
    ]

    def __init__(self, state) -> None:
        super().__init__(state)
        self.recommended: str | None = None
        self.estimates: dict[str, Any] | None = None
        self.gpu_mode: str | None = None  # chosen with g; None: the recommendation for the highlighted method

    def compose_body(self) -> ComposeResult:
        yield Label("", id="machine-line")
        table = DataTable(id="methods", cursor_type="row", zebra_stripes=False)
        # Weights' cells ("131.0 GiB") are wider than its title: a fixed width, so the table never paints
        # before update_cell has widened it (the other columns' titles are wider than their cells).
        table.add_column("Method")
        table.add_column("Weights", width=9)
        table.add_columns("Peak memory", "On this machine")
        for method in METHODS:
            table.add_row(Text(method, style="bold"), "…", "estimating…", "", key=method)
        yield table
        yield Static("", id="method-help")
        yield Label("", id="recommendation", classes="success")
        yield Label("", id="multi-gpu")  # shown only with several GPUs

    def on_mount(self) -> None:
        self.show_machine()
        table = self.query_one("#methods", DataTable)
        table.move_cursor(row=METHODS.index(self.state.config.method))
        table.focus()
        self.estimate()

    def show_machine(self) -> None:
        state = self.state
        settings = state.config
        where = state.memory_summary()
        if state.hardware_known and not state.gpus:
            where = f"{where}; the CPU suits small models only"
        self.query_one("#machine-line", Label).update(
            f"Peak memory for {settings.model or 'the model'} at {settings.data.max_length} tokens, rank {settings.lora.r}. "
            f"This machine: {where}."
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="estimate", description="estimating memory per method")
    def estimate(self) -> None:
        from tui.engine import detect_hardware, estimate_methods

        hardware = None
        if not self.state.hardware_known:
            hardware = detect_hardware()
            self.state.gpus, self.state.memory_gib = hardware
        self.post_message(self.Estimated(estimate_methods(self.state), hardware))

    @on(Estimated)
    def estimated(self, message: Estimated) -> None:
        from tui.engine import recommend

        self.show_machine()
        table = self.query_one("#methods", DataTable)
        columns = list(table.columns)
        for method in METHODS:
            if message.estimates is None:
                cells = ("n/a", "n/a")
                verdict = Text("unknown: no estimator in this install", style="dim")
            else:
                estimate = message.estimates[method]
                cells = (gib(estimate.weights_gib), gib(estimate.peak_gib))
                label, style = VERDICT_TEXT[estimate.verdict]
                verdict = Text(label, style=style)
            table.update_cell(method, columns[1], cells[0], update_width=True)
            table.update_cell(method, columns[2], cells[1], update_width=True)
            table.update_cell(method, columns[3], verdict, update_width=True)
        self.estimates = message.estimates
        method, reason = recommend(message.estimates, self.state.has_gpu)
        self.recommended = method
        self.query_one("#recommendation", Label).update(f"Recommended: {reason}")
        if not self.state.method_chosen:
            table.move_cursor(row=METHODS.index(method))
        self.show_help()

    def worker_failed(self, worker: Worker, message: str) -> None:
        table = self.query_one("#methods", DataTable)
        columns = list(table.columns)
        for method in METHODS:
            table.update_cell(method, columns[2], "unknown")
        self.show_error(f"No memory estimate: {message}")

    @on(DataTable.RowHighlighted, "#methods")
    def show_help(self) -> None:
        method = self.highlighted_method()
        marker = " (recommended)" if method == self.recommended else ""
        self.query_one("#method-help", Static).update(
            Text.assemble((f"{method}{marker}: ", "bold"), METHOD_HELP[method])
        )
        self.show_multi_gpu()

    def multi_gpu(self) -> dict[str, Any] | None:
        estimate = (self.estimates or {}).get(self.highlighted_method())
        return getattr(estimate, "multi_gpu", None)

    def chosen_gpu_mode(self) -> str | None:
        choice = self.multi_gpu()
        if choice is None:
            return None
        return self.gpu_mode if self.gpu_mode in choice["per_gpu"] else choice["recommended"]

    def show_multi_gpu(self) -> None:
        """With several GPUs: per-GPU memory of one GPU, DDP and FSDP for the highlighted method, and the choice."""
        choice = self.multi_gpu()
        label = self.query_one("#multi-gpu", Label)
        label.display = choice is not None
        self.refresh_bindings()
        if choice is None:
            label.update("")
            return
        mode = self.chosen_gpu_mode()
        names = {"single": "one GPU", "ddp": f"DDP x{choice['gpus']}", "fsdp": f"FSDP x{choice['gpus']}"}
        parts: list[Any] = [("GPUs: ", "bold")]
        for option, value in choice["per_gpu"].items():
            style = {"fits": "green", "tight": "yellow", "no": "red"}.get(value.get("fits", "fits"), "")
            text = f"{names[option]} {gib(value['peak_gib'])}/GPU"
            parts.append((f"[{text}]" if option == mode else f" {text} ", f"bold {style}" if option == mode else style))
            parts.append("  ")
        why = choice["why"] if mode == choice["recommended"] else "chosen with g"
        parts.append((f"{mode}: {why} (g to change)", "dim"))
        label.update(Text.assemble(*parts))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_gpus":
            return self.multi_gpu() is not None  # the key is in the footer only with several GPUs
        return super().check_action(action, parameters)

    def action_cycle_gpus(self) -> None:
        choice = self.multi_gpu()
        if choice is None:
            self.notify("One GPU (or none) found: nothing to spread training over.", timeout=4)
            return
        options = list(choice["per_gpu"])
        current = self.chosen_gpu_mode()
        self.gpu_mode = options[(options.index(current) + 1) % len(options)]
        self.show_multi_gpu()

    def highlighted_method(self) -> str:
        row = self.query_one("#methods", DataTable).cursor_row
        return METHODS[max(0, min(row, len(METHODS) - 1))]

    @on(DataTable.RowSelected, "#methods")
    def chosen(self) -> None:
        self.action_next()

    def action_next(self) -> None:
        self.state.config.method = self.highlighted_method()
        mode = self.chosen_gpu_mode()
        if mode is not None:
            self.state.config.distributed.mode = mode
        self.state.method_chosen = True
        super().action_next()
