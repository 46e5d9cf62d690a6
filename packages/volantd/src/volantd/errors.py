"""The one exception hierarchy of volantd."""


class VolantError(Exception):
    """Base of every error volantd raises on purpose; the message is meant for the user."""


class MissingHostToolError(VolantError):
    """A host program volantd needs is not installed."""

    def __init__(self, tool: str, package: str, purpose: str) -> None:
        self.tool = tool
        self.package = package
        super().__init__(
            f"{tool} is required to {purpose} but was not found on PATH; "
            f"install it with: apt-get install {package}"
        )
