"""Errors a user can fix: the CLI prints them as one line and exits with 2."""


class UserError(Exception):
    """Bad input or a state the user must change; the message names the fix."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())
