"""The loss curve: training loss per logged step and evaluation loss, drawn with plotext."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    DEFAULT_CSS = """
    LossPlot {
        height: 1fr;
        min-height: 8;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_points: list[tuple[int, float]] = []
        self.eval_points: list[tuple[int, float]] = []

    def on_mount(self) -> None:
        self.plt.title("loss")
        self.plt.xlabel("step")

    def add_train(self, step: int, loss: float) -> None:
        self.train_points.append((step, loss))

    def add_eval(self, step: int, loss: float) -> None:
        self.eval_points.append((step, loss))

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        if self.train_points:
            steps, losses = zip(*self.train_points)
            plt.plot(list(steps), list(losses), label="train", marker="braille")
        if self.eval_points:
            steps, losses = zip(*self.eval_points)
            plt.scatter(list(steps), list(losses), label="eval", marker="dot")
        self.refresh()
