"""Token: a Hugging Face token, checked with the Hub and kept in the OS keyring (never in a plaintext file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Button, Input, Label, Static
from textual.worker import Worker

from tui.screens.base import WizardStep

INTRO = (
    "A Hugging Face token downloads gated and private models and pushes adapters; public and local models "
    "need none (Continue skips). Create one at https://huggingface.co/settings/tokens."
)
SOURCE_TEXT = {
    "env": "HF_TOKEN is set in the environment: it is used, and wins over any token stored here.",
    "session": "A token is kept in memory for this session only.",
    "keyring": "A token is stored in the OS keyring (service lora-wizard).",
    "hf-cli": "Using the token the Hugging Face CLI stored (`hf auth login`).",
}


class LoginScreen(WizardStep):
    STEP = "login"
    NEXT_LABEL = "Continue"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Check & save", id="save-token", tooltip="Check the token with the Hub and store it"),
        Binding("ctrl+t", "session_only", "This session only", id="session-token",
                tooltip="Check the token and keep it in memory only, until the wizard exits"),
    ]

    @dataclass
    class StatusFound(Message):
        token: str | None
        source: str | None
        keyring: tuple[bool, str]
        account: str | None
        account_problem: str | None

    @dataclass
    class TokenAccepted(Message):
        token: str
        account: str
        stored: str | None  # "keyring" | "session" | None (no keyring: not stored yet)

    def compose_body(self) -> ComposeResult:
        yield Static(INTRO, id="login-intro")
        yield Label("", id="token-status")
        yield Label("", id="keyring-status")
        yield Input(placeholder="hf_… (paste the token; it stays hidden)", password=True, id="token",
                    tooltip="Your Hugging Face access token")
        yield Label("", id="login-result", classes="success")

    def compose_actions(self) -> ComposeResult:
        yield Button("Check & save", id="save-button", compact=True, tooltip="Check the token with the Hub and store it (Ctrl+S)")
        yield Button("This session only", id="session-button", compact=True,
                     tooltip="Check the token and keep it in memory until the wizard exits (Ctrl+T)")

    def on_mount(self) -> None:
        self.query_one("#login-result").display = False
        self.query_one("#session-button").display = False
        state = self.state
        if state.token_checked and state.keyring is not None:
            self.show_status()
        else:
            self.query_one("#token-status", Label).update("Looking for a token…")
            self.find_status()
        self.query_one("#token", Input).focus()

    def show_status(self, account_problem: str | None = None) -> None:
        state = self.state
        if state.token:
            status = SOURCE_TEXT.get(state.token_source or "", "A token is set.")
            if state.account:
                status += f" Account: {state.account}."
            elif account_problem:
                status += f" It could not be checked: {account_problem}"
        else:
            status = "No token yet: paste one below, or Continue with public and local models only."
        self.query_one("#token-status", Label).update(status)
        available, reason = state.keyring or (True, "")
        keyring_label = self.query_one("#keyring-status", Label)
        keyring_label.set_class(not available, "warning")
        keyring_label.update(reason if available else f"{reason.rstrip('.')}. Tokens are never written to a plaintext file.")
        self.query_one("#session-button").display = not available

    # -- workers ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="token", description="looking for a stored token")
    def find_status(self) -> None:
        from core.errors import UserError
        from core.hub import KeyringTimeout, get_token, keyring_available, whoami

        try:
            keyring = keyring_available()
        except KeyringTimeout as error:
            keyring = (False, str(error))
        try:
            token, source = get_token()
        except KeyringTimeout:
            token, source = None, None
        account = problem = None
        if token:
            try:
                account = whoami(token)
            except UserError as error:
                problem = str(error)
        self.post_message(self.StatusFound(token, source, keyring, account, problem))

    @work(thread=True, exclusive=True, exit_on_error=False, group="token", description="checking the token with the Hub")
    def check_token(self, token: str, session_only: bool) -> None:
        from core.hub import keyring_available, store_token, whoami

        account = whoami(token)
        if session_only:
            stored = store_token(token, session_only=True)
        elif keyring_available()[0]:
            stored = store_token(token)
        else:
            stored = None
        self.post_message(self.TokenAccepted(token, account, stored))

    # -- messages -----------------------------------------------------------------------------

    @on(StatusFound)
    def status_found(self, message: StatusFound) -> None:
        state = self.state
        state.token, state.token_source, state.token_checked = message.token, message.source, True
        state.keyring, state.account = message.keyring, message.account
        self.show_status(message.account_problem)

    @on(TokenAccepted)
    def token_accepted(self, message: TokenAccepted) -> None:
        state = self.state
        result = self.query_one("#login-result", Label)
        result.display = True
        if message.stored is None:
            result.update(f"The token works (account {message.account}), but there is no OS keyring to store it in: "
                          "press “This session only” to use it until the wizard exits.")
            self.query_one("#session-button").display = True
            return
        state.account = message.account
        if state.token_source != "env":
            state.token, state.token_source = message.token, message.stored
        where = "in the OS keyring (service lora-wizard)" if message.stored == "keyring" else "for this session only"
        note = " HF_TOKEN in the environment still wins over it." if state.token_source == "env" else ""
        result.update(f"Logged in as {message.account}; token kept {where}.{note}")
        self.query_one("#token", Input).clear()
        self.show_status()

    def worker_failed(self, worker: Worker, message: str) -> None:
        self.query_one("#login-result").display = False
        if worker.group == "token" and "keyring" in message.lower():
            self.query_one("#session-button").display = True
        self.show_error(message)

    # -- actions ------------------------------------------------------------------------------

    def _submit(self, session_only: bool) -> None:
        token = self.query_one("#token", Input).value.strip()
        if not token:
            self.show_error("Paste a token first (from https://huggingface.co/settings/tokens), or Continue without one.")
            return
        self.clear_error()
        self.query_one("#login-result", Label).display = False
        self.check_token(token, session_only)

    @on(Input.Submitted, "#token")
    def token_submitted(self) -> None:
        self._submit(session_only=False)

    @on(Button.Pressed, "#save-button")
    def action_save(self) -> None:
        self._submit(session_only=False)

    @on(Button.Pressed, "#session-button")
    def action_session_only(self) -> None:
        self._submit(session_only=True)
