"""The kinds of expected error that are not a bad input: a device or resource that is
missing or ran out, and an external service (reward server, judge) that failed. The CLI
gives each kind its own exit code (:mod:`cgrpo.cli.exit_codes`); a bad input is a
``ValueError``. No torch here."""

from __future__ import annotations

__all__ = ["DeviceError", "ResourceError", "ServiceError"]


class ResourceError(RuntimeError):
    """A resource the command needs is missing or exhausted (memory, disk); the message
    names it and what to lower or free."""


class DeviceError(ResourceError, ValueError):
    """A device setting names no usable device (misspelt, or a GPU this machine lacks);
    the message names the key, the value and the devices there are."""


class ServiceError(RuntimeError):
    """An external service (a reward server, an OpenAI-compatible judge) failed: unreachable,
    timed out, refused the request or sent a reply that cannot be used."""
