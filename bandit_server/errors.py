"""Domain errors. They carry no transport status; `rpc/errors.py` maps them to gRPC codes."""

from __future__ import annotations


class BanditError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidArgument(BanditError, ValueError):
    """Input that can never succeed as given. The message names the field and the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.problem = message  # without the field: to name it otherwise (see settings)


class NotFound(BanditError, LookupError):
    """A named experiment or event does not exist."""


class AlreadyExists(BanditError):
    """Creating something whose name is taken."""


class Unavailable(BanditError):
    """The service is shutting down or overloaded; the call may succeed later."""


class CannotStart(BanditError):
    """The server cannot start as configured: its data directory or address is unusable or
    taken. The message names which and why."""


def describe(value: object, limit: int = 80) -> str:
    """Quote a user-supplied value for an error message, shortened so messages stay readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
