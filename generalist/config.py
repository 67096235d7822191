"""The generalist's training config; read by :func:`specens.core.config.load_config`."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from specens.core.config import check as _check
from specens.core.errors import ConfigError


MAX_EPOCHS = 100_000  # beyond this a schedule's learning rate is ~0 for every epoch a run could reach
MAX_LR = 10.0  # far past any rate that trains; larger ones are typing mistakes


@dataclass(frozen=True)
class TrainConfig:
    """Generalist training (METHOD §1-2). ``specens generalist train`` builds one from a TOML file
    (top level or a ``[generalist]`` table) and ``--set key=value`` overrides."""

    SECTION: typing.ClassVar[str] = "generalist"

    data: str  # dataset directory (holding dataset.json)
    out: str  # run directory for checkpoints and the final model
    model: str = ""  # registry name (resnet, ngram, mlp, cnn, bag) or "module:callable"; "" picks by input kind
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model factory
    init: str = ""  # an exported generalist to start from (continued training); its model and classes must match
    epochs: int = 30  # at most this many passes of `epoch_size` samples (the schedule's length)
    patience: int = 5  # stop after this many epochs without a better validation score; 0: run every epoch
    epoch_size: int = 0  # samples per epoch; 0 means the training split's size
    batch_size: int = 128
    optimizer: str = "adamw"  # "adamw" or "sgd" (with Nesterov momentum)
    lr: float = 2e-3  # peak learning rate
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.05
    schedule: str = "cosine"  # "cosine" (to zero, after linear warm-up) or "constant"
    warmup: float = 0.05  # fraction of all steps spent warming up linearly
    jitter: int = 0  # random translation of image inputs by up to this many pixels (training only)
    teacher: tuple[str, ...] = ()  # generalist run directories to distil from (an ensemble if several)
    teacher_mean: str = "arithmetic"  # how an ensemble teacher's members combine: arithmetic or geometric
    alpha: float = 0.9  # weight of the soft (teacher) term; ignored without a teacher
    temperature: float = 1.0  # T of the soft term
    use_labels: bool = True  # False treats the transfer set as unlabelled: hard term dropped
    transfer: tuple[str, ...] = ()  # extra transfer sets (dataset directories with the same classes): soft term only
    transfer_split: str = "train"  # the split of each transfer set that is read; its labels are never used
    train_split: str = "train"
    exclude_classes: tuple[int, ...] = ()  # leave these classes out of the training (transfer) set
    train_fraction: float = 1.0  # train on this fraction of the split (a stable subset by key hash; METHOD §6)
    val_split: str = "val"  # "" skips validation (the last epoch's weights are then exported)
    shuffle_buffer: int = 2000  # samples in the streaming shuffle buffer
    num_workers: int = 0  # DataLoader workers decoding shards
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    on_error: str = "raise"  # bad samples: "raise", or "skip" and count them
    checkpoint_every: float = 60.0  # seconds between resumable checkpoints (and after the last epoch); 0: every epoch
    seed: int = 0
    trust_code: bool = False  # build models that the loaded teachers' model.json name as code (module:callable)

    def __post_init__(self) -> None:
        p: list[str] = []
        _check(p, bool(self.data), "data: a dataset directory is required")
        _check(p, bool(self.out), "out: a run directory is required")
        _check(p, 1 <= self.epochs <= MAX_EPOCHS, f"epochs must be in [1, {MAX_EPOCHS}], got {self.epochs}")
        _check(p, self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        _check(p, self.epoch_size >= 0, f"epoch_size must be >= 0, got {self.epoch_size}")
        _check(p, self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(p, self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        _check(p, 0 < self.lr <= MAX_LR, f"lr must be in (0, {MAX_LR:g}], got {self.lr}")
        _check(p, self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(p, self.schedule in ("cosine", "constant"), f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        _check(p, 0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        _check(p, self.jitter >= 0, f"jitter must be >= 0, got {self.jitter}")
        _check(p, self.teacher_mean in ("arithmetic", "geometric"),
               f"teacher_mean must be 'arithmetic' or 'geometric', got {self.teacher_mean!r}")
        _check(p, 0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")
        _check(p, self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(p, self.use_labels or self.has_teacher, "use_labels=false needs a teacher (nothing to learn from)")
        _check(p, not self.transfer or self.has_teacher, "transfer sets need a teacher (they are learnt from its "
               "soft targets only)")
        _check(p, self.shuffle_buffer >= 1, f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        _check(p, self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        _check(p, self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        _check(p, self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
               f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        _check(p, all(isinstance(c, int) and c >= 0 for c in self.exclude_classes),
               f"exclude_classes must be class indices, got {list(self.exclude_classes)}")
        _check(p, 0 < self.train_fraction <= 1, f"train_fraction must be in (0, 1], got {self.train_fraction}")
        _check(p, self.on_error in ("raise", "skip"), f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        _check(p, self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        from .models import REGISTRY  # torch: imported only when a config is built

        _check(p, self.model == "" or self.model in REGISTRY or ":" in self.model,
               f"model must be one of {sorted(REGISTRY)}, 'module:callable' or '' (by input kind), got {self.model!r}")
        if p:
            raise ConfigError("; ".join(p))

    @property
    def has_teacher(self) -> bool:
        """Whether soft targets come from a teacher (a config with another kind of teacher says so)."""
        return bool(self.teacher)

    # Fields that may change when a run resumes: they do not change what is computed.
    RESUMABLE_CHANGES: typing.ClassVar[frozenset[str]] = frozenset({"num_workers", "device", "threads", "out",
                                                                    "patience", "checkpoint_every", "trust_code"})
