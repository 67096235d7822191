"""One exception family for everything a user can get wrong.

Every error that means "your input is wrong" (a config key, a data file, an artifact that does not
fit what it is used with, a device this machine lacks) is a :class:`SpecensError`. Its message
names the culprit (file, key or field, and the value) in one line; the ``specens`` command prints it
as ``Error: <message>`` and exits with status 1, without a traceback. Anything else that escapes is
a bug and keeps its traceback.

The subclasses also derive from :class:`ValueError`, so code written against ``ValueError`` keeps
working.
"""

from __future__ import annotations

from collections.abc import Sequence


class SpecensError(Exception):
    """A user error; the message names the file, key or field at fault."""


class ConfigError(SpecensError, ValueError):
    """A config file, override or option is wrong; the message names the file and every bad key."""


class DataError(SpecensError, ValueError):
    """Bad input data: the message names the file (and sample key or field) at fault."""


class CheckpointError(SpecensError, ValueError):
    """An artifact is missing, malformed, or does not fit what it is used with."""


class TrainingDiverged(SpecensError):
    """Training produced a non-finite loss, gradient or weight; nothing was exported."""


class TrustedCodeWarning(UserWarning):
    """Issued when an artifact's model is built from code it names, because the caller opted in.
    Defined here, not beside the models, so that the ``specens`` command can show it as one line
    without importing torch."""


def check_same_classes(have: Sequence[str], want: Sequence[str], have_where: str, want_where: str) -> None:
    """Refuse to use an artifact trained on classes other than a dataset's (or another artifact's).

    ``have_where`` / ``want_where`` name the two sides, e.g. a run directory and a
    ``dataset.json``; the message says how many classes each has and the first one that differs.
    """
    have, want = tuple(have), tuple(want)
    if have == want:
        return
    first = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), min(len(have), len(want)))
    detail = (
        f"class {first} is {have[first]!r} there and {want[first]!r} here"
        if first < min(len(have), len(want))
        else "one list extends the other"
    )
    raise CheckpointError(
        f"{have_where} was trained on {len(have)} classes, {want_where} has {len(want)} that differ ({detail})"
    )


def check_same_input(model_shape: Sequence[int], data_shape: Sequence[int], model_where: str, data_where: str) -> None:
    """Refuse to run a model on inputs of another shape than it was built for, before any batch
    (a dataset with the right classes but, say, 64-pixel images for a 32-pixel model)."""
    if tuple(model_shape) != tuple(data_shape):
        raise CheckpointError(
            f"{model_where} takes inputs of shape {list(model_shape)}, {data_where} holds {list(data_shape)}"
        )
