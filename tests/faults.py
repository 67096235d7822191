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


class RecordNode:
    """An ``on_epoch_end`` callback that marks, in ``folder``, which Ray node ran each epoch of each
    specialist (``s<index>-e<epoch>-<node id>``), then sleeps ``delay`` seconds so that a test has
    time to remove a node while specialists run."""

    def __init__(self, folder: str | Path, delay: float = 0.0):
        self.folder, self.delay = Path(folder), delay

    def __call__(self, epoch: int, record: dict) -> None:
        import time

        import ray

        node = ray.get_runtime_context().get_node_id()
        (self.folder / f"s{record['index']}-e{epoch}-{node}").touch()
        time.sleep(self.delay)
