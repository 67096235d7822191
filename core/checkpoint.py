"""Weights and resumable training state, shared by every stage that trains.

Weights are safetensors files (no pickle). Training state for resumption lives in
``<work>/checkpoints/epoch-NNNN/`` (weights, optimizer and RNG state, progress);
``<work>/checkpoints/latest.json`` names the newest complete one and is switched atomically only
after that directory is fully written. Optimizer state is saved with ``torch.save`` and read back
with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import param
from .errors import CheckpointError
from .io import (
    atomic_path,
    check_no_links,
    check_target,
    fingerprint,
    publish_dir,
    read_artifact_json,
    read_json,
    write_json_atomic,
)
from .records import Record, is_count, is_number

WEIGHTS = "model.safetensors"
STATE_FORMAT, STATE_VERSION = "specens.training-state", 1  # progress.json of a resumable training state
CHECKPOINT_FILES = ("epoch-[0-9][0-9][0-9][0-9]/", "latest.json", "best.safetensors")  # what <work>/checkpoints holds
STATE_DIR = re.compile(r"epoch-([0-9]{4,})")  # a state directory's name, as save_training_state makes it
STATE_KEYS = ("optimizer", "scheduler", "rng")  # state.pt
LATEST_FORMAT, LATEST_VERSION = "specens.training-latest", 1  # latest.json (none before 2026-12: still read)
RESTART = "; rerun with --restart (restart=True) to discard this training state"


def save_weights(
    model: torch.nn.Module | dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``model``'s state dict (or a state dict) to a safetensors file, atomically."""
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode  # the umask's; safetensors writes owner-only files
        weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
        state = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        save_file(state, tmp, metadata=metadata)
        tmp.chmod(mode)


def verify_weights(path: str | os.PathLike, recorded: str, record: str) -> None:
    """Refuse a weights file that is missing or whose fingerprint is not the ``recorded`` one of
    its ``record`` (the metadata file's name), naming both values."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    fp = fingerprint(path)
    if fp != recorded:
        raise CheckpointError(
            f"{path}: fingerprint {fp} disagrees with {record}'s {recorded} (weights replaced "
            "after they were recorded?)"
        )


def check_shapes(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Refuse a weights file whose tensors are not ``model``'s names and shapes, reading only its
    header. Build ``model`` on the ``meta`` device first (no memory), so that the sizes a stranger's
    record states are allocated only once the weights file on disk has been found to hold them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if stored != wanted:
        bad = sorted(set(stored) ^ set(wanted)) or sorted(k for k in wanted if stored[k] != wanted[k])
        raise CheckpointError(
            f"{path}: weights do not fit the model its record describes (first difference: "
            f"{bad[0]} {stored.get(bad[0])} stored, {wanted.get(bad[0])} described)"
        )


def load_weights(model: torch.nn.Module, path: str | os.PathLike | dict[str, torch.Tensor]) -> None:
    """Load a safetensors file (or a state dict held in memory) into ``model``; names and shapes
    must fit exactly, and a file's floating-point tensors must be finite (a NaN or infinite
    weight would predict NaN everywhere without an error: refused naming the tensor)."""
    if isinstance(path, dict):
        model.load_state_dict(path)
        return
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    for k, v in model.state_dict().items():
        if v.shape != state[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {list(state[k].shape)}, the model's is {list(v.shape)}")
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise CheckpointError(f"{path}: {k} holds non-finite values (NaN or infinity): they cannot predict")
    model.load_state_dict(state)


def checkpoint_dir(work: str | os.PathLike) -> Path:
    """``<work>/checkpoints``, checked to be no symbolic link and to hold nothing but
    :data:`CHECKPOINT_FILES` (no link inside either), so that writing and pruning the training
    state never reaches a directory the stage does not own."""
    ckpt_root = check_no_links(work, Path(work) / "checkpoints")
    check_target(ckpt_root, CHECKPOINT_FILES, "training checkpoints")
    return ckpt_root


def save_training_state(
    work: str | os.PathLike,
    epoch: int,
    model: torch.nn.Module,
    state: dict[str, Any],
    progress: dict[str, Any],
    keep: int = 2,
) -> None:
    """Write the state after ``epoch`` into its own directory, then point ``latest.json`` at it.

    ``state`` holds tensors and plain containers only (optimizer, scheduler and RNG states), so
    that it loads with ``weights_only=True``. Older epoch directories beyond ``keep`` are removed.
    """
    ckpt_root = checkpoint_dir(work)
    name = f"epoch-{epoch:04d}"

    def write(tmp: Path) -> None:
        save_weights(model, tmp / WEIGHTS)
        torch.save(state, tmp / "state.pt")
        write_json_atomic(tmp / "progress.json", TrainingProgress(epoch=epoch, **progress).to_json())

    publish_dir(ckpt_root / name, write)
    write_json_atomic(ckpt_root / "latest.json", Latest(epoch=epoch, dir=name).to_json())
    for old in sorted(ckpt_root.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True, kw_only=True)
class Latest(Record):
    """``latest.json``: the newest complete state, ``dir`` a plain name inside
    ``<work>/checkpoints`` (no path: an edited ``dir`` never sends the reader elsewhere). One
    written before latest.json had a header reads too (:func:`_latest`)."""

    ARTIFACT = (LATEST_FORMAT, LATEST_VERSION)
    epoch: int = param(ge=0)  # 0-based, as the state directory's name
    dir: str

    def checks(self) -> list[tuple[bool, str]]:
        if STATE_DIR.fullmatch(self.dir) is None:
            return [(False, f"'dir' is {self.dir!r:.60}, not the name of a state directory (epoch-NNNN) beside it")]
        return [(self.dir == f"epoch-{self.epoch:04d}", f"'epoch' is {self.epoch}, but 'dir' is {self.dir}")]


@dataclass(frozen=True, kw_only=True)
class TrainingProgress(Record):
    """``progress.json`` of a state: its epoch (0-based, the directory's), the config it was made
    with, the records of epochs 1 .. epoch + 1 (each the stage's epoch record as JSON, read back
    by :class:`~specens.core.loop.EpochLoop` as that class) and the best of them."""

    ARTIFACT = (STATE_FORMAT, STATE_VERSION)
    epoch: int = param(ge=0)
    config: dict[str, Any]
    history: list[dict[str, Any]]
    best: dict[str, Any]

    def checks(self) -> list[tuple[bool, str]]:
        n = len(self.history)
        if n != self.epoch + 1:
            return [(False, f"'epoch' is {self.epoch}, but 'history' holds the records of {n} epochs")]
        numbered = all(
            isinstance(r, dict) and "epoch" in r and r["epoch"] == i + 1 and all(is_number(v) for v in r.values())
            for i, r in enumerate(self.history)
        )
        return [
            (numbered, f"'history' must be the records of epochs 1 to {n}, each an object of numbers with its 'epoch'"),
            (not numbered or self.best in self.history, "'best' must be one of the records of its 'history'"),
        ]


def _latest(work: str | os.PathLike) -> Path | None:
    """The newest complete state's directory, as ``latest.json`` (:class:`Latest`) names it, if
    that directory is there; None when there is no state."""
    path = Path(work) / "checkpoints" / "latest.json"
    if not path.is_file():
        return None
    try:
        data = read_json(path)
        if isinstance(data, dict) and "format" in data:  # written since latest.json has a header
            data = read_artifact_json(path, LATEST_FORMAT, LATEST_VERSION)
        latest = Latest.from_json(data, str(path))  # a header-less one's body is the same
    except CheckpointError as e:
        raise CheckpointError(f"{e}{RESTART}") from None
    if not (path.parent / latest.dir).is_dir():
        raise CheckpointError(f"{path}: names {latest.dir}, which {path.parent} does not hold{RESTART}")
    return path.parent / latest.dir


def training_progress(work: str | os.PathLike) -> TrainingProgress | None:
    """``progress.json`` of the newest complete training state, or None when there is none."""
    d = _latest(work)
    return None if d is None else _read_progress(d)


def load_training_state(
    work: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> tuple[dict, TrainingProgress] | None:
    """Load the newest complete training state into ``model`` and, when given, into ``optimizer``,
    ``scheduler`` and torch's RNG; returns (state, progress) or None when there is none. Every file
    is checked against what it is loaded into before anything is loaded, so a state that does not
    fit (a :class:`CheckpointError` naming the file) leaves them as they were."""
    d = _latest(work)
    if d is None:
        return None
    prog = _read_progress(d)
    state = _read_state(d / "state.pt")
    if optimizer is not None:
        _check_fits(state, d / "state.pt", optimizer, scheduler)
    load_weights(model, d / WEIGHTS)  # checked whole before the model changes
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{d / 'state.pt'}: does not fit this run ({_first_line(e)}){RESTART}") from None
    return state, prog


def _read_state(path: Path) -> dict:
    """``state.pt``: tensors and plain containers only (``weights_only``: no pickled object is
    built), holding :data:`STATE_KEYS`."""
    try:
        with warnings.catch_warnings():  # the weights-only unpickler warns about what it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing{RESTART}") from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a specens training state (weights_only load refused it){RESTART}") from None
    except Exception as e:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path}: cannot be read ({_first_line(e)}){RESTART}") from None
    if not (isinstance(state, dict) and sorted(state) == sorted(STATE_KEYS)):
        raise CheckpointError(
            f"{path}: not a specens training state (an object of the optimizer's and scheduler's states "
            f"and torch's RNG state){RESTART}"
        )
    return state


def _check_fits(state: dict, path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Refuse a state that does not fit this run's optimizer, scheduler and RNG: the scheduler's
    state and the optimizer's parameter groups must have this run's keys and kinds of value, the
    groups this run's sizes, every per-parameter tensor its parameter's shape (a fused optimizer
    step on another shape writes outside its memory), and the RNG state torch's size."""
    saved, rng = state["optimizer"], state["rng"]
    fresh_groups = optimizer.state_dict()["param_groups"]
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not (
        isinstance(groups, list)
        and len(groups) == len(fresh_groups)
        and all(
            isinstance(g, dict) and _like(fresh, g, skip="params")
            for fresh, g in zip(fresh_groups, groups, strict=True)
        )
        and _like(scheduler.state_dict(), state["scheduler"])
    ):
        raise CheckpointError(f"{path}: its optimizer or schedule state is not this run's{RESTART}")
    params: dict[Any, torch.Tensor] = {}
    for g, ours in zip(groups, optimizer.param_groups, strict=True):
        ids = g.get("params")
        if not (isinstance(ids, list) and len(ids) == len(ours["params"]) and all(is_count(i) for i in ids)):
            raise CheckpointError(f"{path}: its optimizer's parameter groups are not this model's{RESTART}")
        params.update(zip(ids, ours["params"], strict=True))
    per_param = saved.get("state")
    if not (
        isinstance(per_param, dict)
        and set(per_param) <= set(params)
        and all(isinstance(v, dict) and all(isinstance(k, str) for k in v) for v in per_param.values())
    ):
        raise CheckpointError(f"{path}: its optimizer's per-parameter state is not this model's{RESTART}")
    for i, values in per_param.items():
        p = params[i]
        for key, v in values.items():
            if isinstance(v, torch.Tensor):
                ok = (v.shape == p.shape and v.is_floating_point()) if v.dim() else bool(torch.isfinite(v).all())
            else:
                ok = v is None or is_number(v)
            if not ok:
                got = f"of shape {list(v.shape)} ({v.dtype})" if isinstance(v, torch.Tensor) else repr(v)[:40]
                raise CheckpointError(
                    f"{path}: the optimizer's {key!r} of a parameter of shape {list(p.shape)} is {got}{RESTART}"
                )
    want = torch.get_rng_state()
    if not (isinstance(rng, torch.Tensor) and rng.dtype == want.dtype and rng.shape == want.shape):
        raise CheckpointError(f"{path}: its 'rng' is not a torch RNG state{RESTART}")


def _like(fresh: Any, loaded: Any, skip: str = "") -> bool:
    """Whether ``loaded`` (read from a file) has the structure of ``fresh`` (this run's own):
    the same keys (but ``skip``), lengths and kinds of value (numbers finite; true/false and null
    interchangeable)."""
    if isinstance(fresh, dict):
        keys = set(fresh) - {skip}
        return (
            isinstance(loaded, dict) and set(loaded) - {skip} == keys and all(_like(fresh[k], loaded[k]) for k in keys)
        )
    if isinstance(fresh, list | tuple):
        return (
            isinstance(loaded, list | tuple)
            and len(loaded) == len(fresh)
            and all(_like(a, b) for a, b in zip(fresh, loaded, strict=True))
        )
    if fresh is None or isinstance(fresh, bool):
        return loaded is None or isinstance(loaded, bool)
    if isinstance(fresh, int | float):
        return is_number(loaded)
    if isinstance(fresh, torch.Tensor):
        return isinstance(loaded, torch.Tensor) and loaded.shape == fresh.shape
    return type(loaded) is type(fresh)


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _read_progress(d: Path) -> TrainingProgress:
    """``progress.json`` of the state in ``d`` (``epoch-EEEE``), its epoch the directory's. A
    problem is refused naming the file and the key, with the way out (``--restart`` discards the
    state)."""
    path = d / "progress.json"
    try:
        prog = TrainingProgress.from_json(read_artifact_json(path, STATE_FORMAT, STATE_VERSION), str(path))
        epoch = int(STATE_DIR.fullmatch(d.name).group(1))
        if prog.epoch != epoch:
            raise CheckpointError(f"{path}: 'epoch' is {prog.epoch}, but this is the state after epoch {epoch}")
    except CheckpointError as e:
        raise CheckpointError(f"{e}{RESTART}") from None
    return prog


def discard_training_state(work: str | os.PathLike) -> None:
    """Remove ``<work>/checkpoints`` (a restart); a link there is refused, not followed."""
    shutil.rmtree(checkpoint_dir(work), ignore_errors=True)
