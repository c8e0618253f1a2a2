"""Every error spotsim raises on purpose.

Each class also inherits the built-in a caller would naturally catch, so
``except FileNotFoundError`` works on a missing checkpoint object whether the
store is a local directory or a bucket.
"""

from __future__ import annotations


class SpotsimError(Exception):
    """Base of all spotsim errors; the CLI prints these as one line and exits 2."""


class InvalidURI(SpotsimError, ValueError):
    """A store URI that spotsim cannot open (wrong scheme, bad bucket name, relative path)."""


class InvalidKey(SpotsimError, ValueError):
    """An object key that is empty, escapes the store root, or uses a reserved name."""


class ObjectNotFound(SpotsimError, FileNotFoundError):
    """The key has no object in the store."""


class BucketNotFound(SpotsimError, FileNotFoundError):
    """The bucket of a ``gs://`` URI does not exist (and spotsim may not create it)."""


class StoreAccessDenied(SpotsimError, PermissionError):
    """The store refused the credentials, or there are none."""


class StoreUnavailable(SpotsimError, ConnectionError):
    """The store could not be reached, even after retrying transient failures."""


class StoreError(SpotsimError, OSError):
    """Any other failure reported by a store."""


class IntegrityError(SpotsimError, ValueError):
    """Bytes read back do not match the checksum the store recorded for them."""


class MissingDependency(SpotsimError, ImportError):
    """An optional package is needed for this feature; the message says which extra to install."""


class EmulatorError(SpotsimError, RuntimeError):
    """The embedded GCS emulator could not be started, reached or stopped."""


class EmulatorUnavailable(EmulatorError):
    """The requested emulator backend cannot run here (e.g. no Docker engine answers)."""


class CheckpointError(SpotsimError):
    """A checkpoint could not be saved or restored."""


class CorruptCheckpoint(CheckpointError, ValueError):
    """A checkpoint's objects are missing, truncated, fail their checksums, or are malformed."""


class InvalidOption(SpotsimError, ValueError):
    """A command-line or configuration value out of range (a zero interval, a NaN rate…)."""


class InvalidSchedule(InvalidOption):
    """A preemption schedule that cannot be parsed or drawn from."""


class InvalidTrace(InvalidOption):
    """A spot trace file that cannot be read or is not in the spot-traces JSON format."""


class UnknownMachine(InvalidOption):
    """A machine name that is not in the price table."""


class JobCrashed(SpotsimError, RuntimeError):
    """A training attempt ended in a way the harness did not cause.

    Carries what a user needs to tell a bug from a flaky host: the attempt,
    its exit code (negative: killed by that signal) and the tail of its stderr.
    """

    def __init__(self, attempt: int, exit_code: int, stderr_tail: str, *, timeout_s: float | None = None) -> None:
        self.attempt, self.exit_code, self.stderr_tail = attempt, exit_code, stderr_tail
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else "no stderr"
        if timeout_s is not None:
            what = f"ran past the attempt timeout of {timeout_s:g} s and was stopped"
        elif exit_code == 0:
            what = "exited with status 0 without reporting `done` (unfinished, or it never writes the done event)"
        else:
            what = f"crashed with exit code {exit_code}"
        super().__init__(f"attempt {attempt} {what}: {last}")
