"""Fault injection for tests, through the callbacks the library takes (never through its code)."""

from __future__ import annotations

from pathlib import Path


class InjectedFailure(RuntimeError):
    pass


class FailOnce:
    """An ``on_epoch_end`` callback that raises once, after ``epoch`` (0-based) of specialist
    ``index``; a marker file remembers that it did, so the retry (another process) goes on."""

    def __init__(self, index: int, epoch: int, marker: str | Path):
        self.index, self.epoch, self.marker = index, epoch, Path(marker)

    def __call__(self, epoch: int, record: dict) -> None:
        if record.get("index") == self.index and epoch == self.epoch and not self.marker.exists():
            self.marker.write_text("failed once\n")
            raise InjectedFailure(f"specialist {self.index}: injected failure after epoch {epoch + 1}")
