"""The generalist's training config; read by :func:`specens.core.config.load_config`."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from specens.core.config import OptimParts, RuntimeParts, SoftTargetParts, param


@dataclass(frozen=True, kw_only=True)
class TrainConfig(OptimParts, SoftTargetParts, RuntimeParts):
    """Generalist training (docs/method.md §1-2). ``specens generalist train`` builds one from a TOML file
    (top level or a ``[generalist]`` table) and ``--set key=value`` overrides. The optimiser,
    runtime and soft-target fields come from the shared parts of :mod:`specens.core.config`."""

    SECTION: typing.ClassVar[str] = "generalist"
    PATH_FIELDS: typing.ClassVar[frozenset[str]] = frozenset({"data", "out", "init", "teacher", "transfer"})
    CODE_FIELDS: typing.ClassVar[tuple[str, ...]] = ("model",)  # may name code: not from a file without --trust-code

    data: str  # dataset directory (holding dataset.json)
    out: str  # run directory for checkpoints and the final model
    model: str = ""  # registry name (resnet, ngram, mlp, cnn, bag) or "module:callable"; "" picks by input kind
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model factory
    init: str = ""  # an exported generalist to start from (continued training); its model and classes must match
    jitter: int = param(0, ge=0)  # random translation of image inputs by up to this many pixels (training only)
    teacher: tuple[
        str, ...
    ] = ()  # generalist run directories to distil from (an ensemble if several); soft term's alpha, T
    teacher_mean: str = param(
        "arithmetic", choices=("arithmetic", "geometric")
    )  # how an ensemble teacher's members combine
    use_labels: bool = True  # False treats the transfer set as unlabelled: hard term dropped
    transfer: tuple[str, ...] = ()  # extra transfer sets (dataset directories with the same classes): soft term only
    transfer_split: str = "train"  # the split of each transfer set that is read; its labels are never used
    train_split: str = "train"
    exclude_classes: tuple[int, ...] = ()  # leave these classes out of the training (transfer) set
    train_fraction: float = param(1.0, gt=0, le=1)  # a stable subset of the split by key hash (docs/method.md §4)
    val_split: str = "val"  # "" skips validation (the last epoch's weights are then exported)
    shuffle_buffer: int = param(2000, ge=1)  # samples in the streaming shuffle buffer
    on_error: str = param("raise", choices=("raise", "skip"))  # bad samples: raise, or skip and count them

    # Fields that may change when a run resumes: they do not change what is computed.
    RESUMABLE_CHANGES: typing.ClassVar[frozenset[str]] = RuntimeParts.RESUMABLE | {"out", "patience"}

    def checks(self) -> list[tuple[bool, str]]:
        from .models import REGISTRY  # torch: imported only when a config is built

        return [
            (bool(self.data), "data: a dataset directory is required"),
            (bool(self.out), "out: a run directory is required"),
            *super().checks(),
            (self.use_labels or self.has_teacher, "use_labels=false needs a teacher (nothing to learn from)"),
            (
                not self.transfer or self.has_teacher,
                "transfer sets need a teacher (they are learnt from its soft targets only)",
            ),
            (
                not (self.teacher and self.alpha == 0),
                "alpha=0 leaves the teacher unused (the soft term's weight is 0): drop teacher, or set alpha > 0",
            ),
            *(
                (
                    self.has_teacher or getattr(self, k) == self._default(k),
                    f"{k}={getattr(self, k)!r} does nothing without a teacher (it shapes the soft term only)",
                )
                for k in ("alpha", "temperature", "teacher_mean")
            ),
            (
                bool(self.transfer) or self.transfer_split == self._default("transfer_split"),
                f"transfer_split={self.transfer_split!r} does nothing without transfer sets (it names their split)",
            ),
            (
                all(isinstance(c, int) and c >= 0 for c in self.exclude_classes),
                f"exclude_classes must be class indices, got {list(self.exclude_classes)}",
            ),
            (
                self.model == "" or self.model in REGISTRY or ":" in self.model,
                f"model must be one of {sorted(REGISTRY)}, 'module:callable' or '' (by input kind), got {self.model!r}",
            ),
        ]

    def _default(self, name: str) -> Any:
        """Field ``name``'s default in this config class (a subclass may re-declare it)."""
        f = type(self).__dataclass_fields__[name]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()

    @property
    def has_teacher(self) -> bool:
        """Whether soft targets come from a teacher (a config with another kind of teacher says so)."""
        return bool(self.teacher)
