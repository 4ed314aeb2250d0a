"""One root exception, sorted by what the caller should do about it.

`alpr` prints an `AlprError` as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class AlprError(Exception):
    """Root of every error this project raises on purpose. The message is for a person."""

    exit_code = 1


class ConfigError(AlprError):
    """A setting is missing, unknown or out of range. Fatal at start."""

    exit_code = 2


class Unavailable(AlprError):
    """A dependency (broker, ClickHouse, registry) cannot be reached now; retriable."""

    exit_code = 3


class DeliveryFailed(Unavailable):
    """The broker did not acknowledge records; nothing may be committed past them."""


class Refused(AlprError):
    """A person asked for something a policy forbids; the message names the rule."""

    exit_code = 4


class BadInput(AlprError):
    """A pattern, row, file or value given by a person is not valid; nothing was changed."""

    exit_code = 2
