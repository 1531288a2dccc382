"""The wizard's screens, one file per step; training, chat and export follow a started run."""

from __future__ import annotations

from tui.screens.dataset import DatasetScreen
from tui.screens.login import LoginScreen
from tui.screens.method import MethodScreen
from tui.screens.model import ModelScreen
from tui.screens.review import ReviewScreen
from tui.screens.settings import SettingsScreen

STEP_SCREENS = {
    "login": LoginScreen,
    "model": ModelScreen,
    "method": MethodScreen,
    "dataset": DatasetScreen,
    "settings": SettingsScreen,
    "review": ReviewScreen,
}
