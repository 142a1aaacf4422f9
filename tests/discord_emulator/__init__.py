"""A protocol-level Discord stand-in (REST, gateway, control API) that an unmodified discord.py client talks to."""

from .client import EmulatorClient, EmulatorControlError, RunningEmulator, running_emulator
from .server import DiscordEmulator, EmulatorError

__all__ = [
    "DiscordEmulator",
    "EmulatorClient",
    "EmulatorControlError",
    "EmulatorError",
    "RunningEmulator",
    "running_emulator",
]
