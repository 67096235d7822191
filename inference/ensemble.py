"""The specialist ensemble at inference time (docs/method.md §5; the paper's section 5.4).

:class:`Ensemble` holds the generalist, the groups of ``clusters.json`` and one trained specialist
per group. For a batch it

1. runs the generalist and takes its n most probable classes (``top_n``, default 1 as in the paper);
2. routes: specialist m is active for an example when its group holds one of those classes
   (:func:`route`); an example with no active specialist keeps q = p_g;
3. runs each specialist only on the examples routed to it (gather, one batch per specialist,
   scatter back), so the cost grows with the number of active specialists, not with M;
4. adds the §4 dustbin correction to each specialist's dustbin logit, so its distribution refers to
   the natural class prior again, and
5. solves for q with :func:`~specens.inference.combine.combine_distributions`, the paper's
   objective unless ``specialist_weight`` w ≠ 1 weights the specialists' KL terms (diagnosis).

A run directory holds ``generalist/``, ``clusters/clusters.json`` and ``specialists/sNNN/``, the
layout the ``specens`` commands write; :meth:`Ensemble.load` checks that they belong together.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from specens.clustering.cluster import load_clusters
from specens.core.cost import forward_flops
from specens.core.device import resolve_device
from specens.core.errors import CheckpointError, ConfigError
from specens.data.format import INFO_FILE, load_info
from specens.generalist.checkpoint import Generalist, load_generalist
from specens.specialists.model import apply_correction, route, split_body
from specens.specialists.record import META as SPECIALIST_META
from specens.specialists.record import SpecialistRecord, load_specialist, read_specialist, specialist_dir

from .combine import check_specialist_weight, combine_distributions

SPECIALIST_MEMORY = 2 * 2**30  # bytes of specialist weights an Ensemble keeps loaded by default


class SpecialistStore(Sequence):
    """The specialists of a run, each loaded from its directory on first use and kept in a
    least-recently-used cache of at most ``max_bytes`` of weights (always at least the one in use),
    so an ensemble of hundreds of specialists needs the memory of the few a batch routes to, not
    of all M. ``store[m]`` is specialist m's model; ``loads`` counts loads from disk."""

    def __init__(
        self,
        dirs: Sequence[Path],
        generalist_model: torch.nn.Module,
        device: torch.device,
        max_bytes: int,
        fingerprints: Sequence[str] | None = None,
    ):
        self.dirs, self.base, self.device, self.max_bytes = list(dirs), generalist_model, device, max_bytes
        self.fingerprints = list(fingerprints) if fingerprints is not None else None  # as the ensemble loaded them
        self._cache: OrderedDict[int, tuple[torch.nn.Module, int]] = OrderedDict()
        self.loads = 0

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, m):
        if isinstance(m, slice):
            return [self[i] for i in range(len(self))[m]]
        m = int(m)
        if m in self._cache:
            self._cache.move_to_end(m)
            return self._cache[m][0]
        if not -len(self) <= m < len(self):
            raise IndexError(f"specialist {m} of {len(self)}")
        model, record = load_specialist(self.dirs[m], self.base, self.device)
        if self.fingerprints is not None and record.fingerprint != self.fingerprints[m]:
            raise CheckpointError(
                f"{self.dirs[m]}: changed since the ensemble was loaded (fingerprint "
                f"{self.fingerprints[m]} then, {record.fingerprint} now)"
            )
        self.loads += 1
        self._cache[m] = (model, sum(t.numel() * t.element_size() for t in model.state_dict().values()))
        while len(self._cache) > 1 and self.loaded_bytes > self.max_bytes:
            self._cache.popitem(last=False)
        return model

    @property
    def loaded_bytes(self) -> int:
        return sum(size for _, size in self._cache.values())


@dataclass
class EnsembleOutput:
    """What :meth:`Ensemble.forward` computes for a batch: q (B, C), the generalist's p_g (B, C),
    and the routing ``active`` (B, M) bool."""

    q: torch.Tensor
    p_general: torch.Tensor
    active: torch.Tensor


class Ensemble:
    """A generalist with its specialists, ready for inference. Build it with :meth:`load`.

    Example::

        ens = Ensemble.load("runs/glyphs")
        q = ens.predict_proba(images)          # (B, C) on the simplex
        labels = ens.predict(images)           # (B,)
    """

    def __init__(
        self,
        generalist: Generalist,
        groups: Sequence[torch.Tensor],
        specialists: Sequence[torch.nn.Module],
        corrections: Sequence[float],
        *,
        top_n: int = 1,
        method: str = "newton",
        specialist_weight: float = 1.0,
        device: torch.device | str = "cpu",
        fingerprints: dict | None = None,
        indices: Sequence[int] | None = None,
        gated_off: Sequence[int] = (),
        top_blocks: int = 0,
    ):
        if not len(groups) == len(specialists) == len(corrections):
            raise ValueError(f"{len(groups)} groups, {len(specialists)} specialists, {len(corrections)} corrections")
        if top_n < 1:
            raise ConfigError(f"top_n must be at least 1, got {top_n}")
        self.device = torch.device(device)
        self.generalist = generalist
        self.groups = [torch.as_tensor(g, dtype=torch.int64, device=self.device) for g in groups]
        self.specialists = specialists if isinstance(specialists, SpecialistStore) else list(specialists)
        self.corrections = [float(c) for c in corrections]
        self.top_n, self.method = top_n, method
        self.specialist_weight = specialist_weight
        self.fingerprints = fingerprints or {}
        self.indices = list(range(len(groups)) if indices is None else indices)  # positions in clusters.json
        self.gated_off = list(gated_off)  # trained specialists the gate left out
        # With shared-trunk specialists (top_blocks > 0) the generalist's body runs as trunk, then top:
        # the trunk's output is computed once per batch and every routed specialist starts from it.
        self.trunk, self.generalist_top = split_body(generalist.model.body, top_blocks) if top_blocks else (None, None)
        # "generalist": its TrainingCost (None if exported without training), "specialists": every
        # trained one's (load fills it)
        self.training_costs: dict = {"generalist": None, "specialists": []}
        self.fits: list = []  # the specialists' fit reports (specialists.fit.FitReport), by group
        self.seconds = {"generalist": 0.0, "specialists": 0.0, "combine": 0.0}  # time spent in each step so far
        self.membership = torch.zeros(len(self.groups), generalist.n_classes, dtype=torch.bool, device=self.device)
        for m, g in enumerate(self.groups):
            self.membership[m, g] = True

    @property
    def classes(self) -> tuple[str, ...]:
        return self.generalist.classes

    @property
    def n_classes(self) -> int:
        return self.generalist.n_classes

    def dataset_info(self, data: str | Path):
        """``data``'s :class:`DatasetInfo`, after checking that its classes, input shape and dtype
        are the ensemble's."""
        info = load_info(data)
        self.generalist.check_fits(info, "the ensemble's generalist", f"{data}/{INFO_FILE}")
        return info

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        *,
        generalist: str | Path | None = None,
        clusters: str | Path | None = None,
        device: str = "auto",
        top_n: int = 1,
        method: str = "newton",
        specialist_weight: float = 1.0,
        all_specialists: bool = False,
        specialist_memory: int = SPECIALIST_MEMORY,
        trust_code: bool = False,
    ) -> Ensemble:
        """Load ``run_dir``'s generalist, ``clusters.json`` and every specialist, and check that
        they fit together: the groups were made from this generalist, and each specialist
        ``sNNN`` was trained from this generalist for group NNN of this ``clusters.json``, with
        the weights its record names. Any mismatch raises :class:`CheckpointError` naming the
        artifact at fault. ``generalist`` and ``clusters`` override the default locations
        ``run_dir/generalist`` and ``run_dir/clusters/clusters.json``.

        Specialists their gate switched off (:mod:`specens.specialists.gate`) are checked but left
        out, unless ``all_specialists``. Beyond ``specialist_memory`` bytes of weights, the
        specialists are a :class:`SpecialistStore` (loaded as batches route to them, least recently
        used dropped first). A ``model.json`` naming code is refused unless ``trust_code``.
        """
        run_dir = Path(run_dir)
        dev = resolve_device(device)
        gen_dir = Path(generalist or run_dir / "generalist")
        gen = load_generalist(gen_dir, dev, trust_code)
        clusters_path = Path(clusters or run_dir / "clusters" / "clusters.json")
        cl = load_clusters(clusters_path, gen.fingerprint, gen.n_classes)
        records = _specialist_records(run_dir, cl, clusters_path, gen, gen_dir)
        kept = [m for m, record in enumerate(records) if all_specialists or record.gate.on]
        dirs = [specialist_dir(run_dir, m) for m in kept]
        blocks = {records[m].top_blocks for m in kept}
        _check_layout(run_dir, cl, clusters_path, blocks, gen, gen_dir, dirs)
        fps = {
            "generalist": gen.fingerprint,
            "clusters": cl.fingerprint,
            "specialists": [records[m].fingerprint for m in kept],
        }
        ens = cls(
            gen,
            [torch.as_tensor(cl.groups[m]) for m in kept],
            _load_specialists(dirs, gen.model, dev, specialist_memory, fps["specialists"]),
            [records[m].dustbin_correction for m in kept],
            top_n=top_n,
            method=method,
            specialist_weight=specialist_weight,
            device=dev,
            fingerprints=fps,
            indices=kept,
            gated_off=[m for m in range(len(records)) if m not in kept],
            top_blocks=next(iter(blocks), 0),
        )
        gen_cost = gen.record.metrics.cost if gen.record.metrics else None  # None: exported without training
        ens.training_costs = {"generalist": gen_cost, "specialists": [r.cost for r in records]}
        ens.fits = [r.fit for r in records]  # every group's specialist, gated off too (specialists.fit)
        return ens

    @property
    def specialist_weight(self) -> float:
        """w, the weight of the specialists' KL terms in the combination (1: the paper's)."""
        return self._specialist_weight

    @specialist_weight.setter
    def specialist_weight(self, w: float) -> None:
        self._specialist_weight = check_specialist_weight(w)

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> EnsembleOutput:
        """q, p_g and the routing for a batch of model inputs (B, *input_shape)."""
        p_g, active, p_specs = self.experts(inputs)
        t0 = time.perf_counter()
        q = self.combine(p_g, active, p_specs)
        self.seconds["combine"] += time.perf_counter() - t0
        return EnsembleOutput(q, p_g, active)

    def combine(
        self,
        p_g: torch.Tensor,
        active: torch.Tensor,
        p_specs: Sequence[torch.Tensor],
        specialist_weight: float | None = None,
    ) -> torch.Tensor:
        """q from what :meth:`experts` returned (step 5), with this ensemble's w unless one is given."""
        w = self.specialist_weight if specialist_weight is None else specialist_weight
        return combine_distributions(p_g, p_specs, self.groups, active, method=self.method, specialist_weight=w)

    @torch.no_grad()
    def experts(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Steps 1-4 for a batch: p_g (B, C), the routing ``active`` (B, M) and each specialist's
        corrected distribution (B, |S_m| + 1), zero on the rows not routed to it."""
        t0 = time.perf_counter()  # on CUDA these times are launch times unless the caller synchronises
        x = inputs.to(self.device)
        if self.trunk is not None:
            x = self.trunk(x)  # (B, ...) the shared trunk's output, once for the generalist and every specialist
            p_g = F.softmax(self.generalist.model.head(self.generalist_top(x)).float(), dim=1)
        else:
            p_g = F.softmax(self.generalist.model(x).float(), dim=1)
        active = route(p_g, self.membership, self.top_n)
        t1 = time.perf_counter()
        self.seconds["generalist"] += t1 - t0
        p_specs = [torch.zeros(len(x), len(g) + 1, device=self.device) for g in self.groups]
        for m in active.any(0).nonzero().flatten().tolist():  # each routed-to specialist once per batch
            rows = active[:, m].nonzero().flatten()  # only its examples: the other rows stay 0, ignored
            spec = self.specialists[m]
            out = spec.on_features(x[rows]) if self.trunk is not None else spec(x[rows])
            logits = apply_correction(out.float(), self.corrections[m])
            p_specs[m][rows] = F.softmax(logits, dim=1)
        self.seconds["specialists"] += time.perf_counter() - t1
        return p_g, active, p_specs

    @torch.no_grad()
    def specialist_flops(self, example: torch.Tensor) -> float:
        """FLOPs per example of one specialist pass beyond what the generalist's pass already
        computed (the shared trunk, if any, runs once per example); 0 without specialists."""
        if not len(self.specialists):
            return 0.0
        if self.trunk is None:
            return forward_flops(self.specialists[0], example)
        return forward_flops(self.specialists[0].own, self.trunk(example.to(self.device)))

    def predict_proba(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ensemble's distribution q over all classes, (B, C)."""
        return self.forward(inputs).q

    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ensemble's most probable class, (B,) int64."""
        return self.predict_proba(inputs).argmax(1)


def _load_specialists(dirs: list[Path], generalist, device, memory: int, fingerprints: list[str]):
    """The specialists of ``dirs``: loaded now when their weight files fit in ``memory`` bytes,
    else a :class:`SpecialistStore` that loads them as batches route to them."""
    if sum((d / "model.safetensors").stat().st_size for d in dirs) <= memory:
        return [load_specialist(d, generalist, device)[0] for d in dirs]
    return SpecialistStore(dirs, generalist, device, memory, fingerprints)


def _specialist_records(run_dir: Path, cl, clusters_path: Path, gen, gen_dir: Path) -> list[SpecialistRecord]:
    """Every group's specialist record, each checked against this run (:func:`_check_member`)."""
    records = []
    for m, group in enumerate(cl.groups):
        d = specialist_dir(run_dir, m)
        meta_path = d / SPECIALIST_META
        if not meta_path.is_file():
            raise CheckpointError(
                f"{meta_path}: missing; group {m} of {clusters_path} has no trained specialist "
                "(run `specens specialists train`)"
            )
        record = read_specialist(d)
        _check_member(record, meta_path, m, group, gen, gen_dir, cl, clusters_path)
        records.append(record)
    return records


def _check_member(
    record: SpecialistRecord, meta_path: Path, m: int, group, gen, gen_dir: Path, cl, clusters_path: Path
) -> None:
    """Specialist ``m``'s record fits this run: made from this generalist for group ``m`` of this
    ``clusters.json``, with its classes and architecture. Any mismatch names the record."""
    if record.generalist_fingerprint != gen.fingerprint:
        raise CheckpointError(
            f"{meta_path}: trained from generalist {record.generalist_fingerprint}, but {gen_dir} is {gen.fingerprint}"
        )
    if record.clusters_fingerprint != cl.fingerprint:
        raise CheckpointError(
            f"{meta_path}: trained for another clusters.json than {clusters_path} "
            f"({record.clusters_fingerprint} vs {cl.fingerprint})"
        )
    if record.group != group.tolist():
        raise CheckpointError(f"{meta_path}: its group differs from group {m} of {clusters_path}")
    if record.classes != [gen.classes[c] for c in record.group if c < gen.n_classes]:
        raise CheckpointError(f"{meta_path}: its class names are not those of its group in {gen_dir}")
    if record.model["generalist_model"] != gen.record.model:
        raise CheckpointError(
            f"{meta_path}: built on another architecture ({record.model['generalist_model']}) than {gen_dir}'s"
        )
    if record.n_classes != gen.n_classes or record.index != m:
        raise CheckpointError(
            f"{meta_path}: made as specialist {record.index} of {record.n_classes} classes, "
            f"but it sits at group {m} of a {gen.n_classes}-class generalist"
        )


def _check_layout(run_dir: Path, cl, clusters_path: Path, blocks: set, gen, gen_dir: Path, specialists: list) -> None:
    """The run's specialists as a whole: no folder beyond the groups, one shared trunk that fits
    the generalist's model, and every kept specialist's weights in place."""
    extra = sorted(
        p.name for p in (run_dir / "specialists").glob("s[0-9][0-9][0-9]") if int(p.name[1:]) >= len(cl.groups)
    )
    if extra:
        raise CheckpointError(
            f"{run_dir / 'specialists' / extra[0]}: no such group in {clusters_path} "
            f"({len(cl.groups)} groups); the specialists come from another clustering"
        )
    if len(blocks) > 1:
        raise CheckpointError(
            f"{run_dir / 'specialists'}: specialists with different shared trunks "
            f"(top_blocks {sorted(blocks)}); retrain them with one shared_trunk"
        )
    if blocks and max(blocks):
        try:
            split_body(gen.model.body, max(blocks))
        except ValueError as e:
            raise CheckpointError(
                f"{run_dir / 'specialists'}: 'top_blocks' does not fit {gen_dir}'s model: {e}"
            ) from None
    for d in specialists:
        if not (d / "model.safetensors").is_file():
            raise CheckpointError(f"{d / 'model.safetensors'}: missing")
