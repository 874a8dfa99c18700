"""Domain exceptions. Each carries the exit code the CLI maps it to (0 ok, 1 failed check, 2 usage/config)."""

from __future__ import annotations

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


class RecapError(Exception):
    """Base class: a one-line, user-facing message naming the file, row or field."""

    exit_code = EXIT_USAGE
    transient = False  # True only for faults a later attempt of the same step can get past


class ConfigError(RecapError):
    """A config file is missing, unparsable or has a bad field."""


class SchemaError(RecapError):
    """The data contract (schema YAML) is missing or inconsistent."""


class StorageError(RecapError):
    """A URI cannot be read or written (not found, permission, retries exhausted)."""


class StorageUnavailable(StorageError):
    """Object storage kept failing with retryable errors past the client's retries: an outage, worth
    retrying the whole step later (pipeline.runtime.retry_transient), unlike every other error here."""

    transient = True


class DataError(RecapError):
    """Input data breaks the contract (corrupt shard, wrong type); names the file and row."""

    exit_code = EXIT_CHECK_FAILED


class CheckFailed(RecapError):
    """A step ran to completion but a check it owns failed (e.g. validation anomalies)."""

    exit_code = EXIT_CHECK_FAILED


class MissingDependency(RecapError):
    """A step's Python dependencies are not installed in this environment (image)."""
