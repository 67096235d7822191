"""The one progress bar every stage draws: tqdm, on a terminal only.

Piped to a file, under ``ray job submit`` or in CI (stderr not a terminal), a bar would be redrawn
as hundreds of lines; there the stages' own one-line messages (epoch lines, stage headers) are the
record, and no bar is drawn. ``enabled=False`` (a stage's ``progress=False``) turns it off anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, desc: str, unit: str, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand with ``total=``), drawn only when
    ``enabled`` and stderr is a terminal (tqdm's ``disable=None``)."""
    return tqdm(iterable, desc=desc, unit=unit, disable=None if enabled else True, dynamic_ncols=True, **kwargs)
