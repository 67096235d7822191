"""Typed records: each on-disk record reads back what it wrote, and refuses a missing or unknown
key, or a value of the wrong type, by name."""

import dataclasses
import json

import pytest
import torch

from specens.core.cost import TrainingCost
from specens.core.errors import CheckpointError
from specens.core.loop import EpochRecord, TrainingMetrics
from specens.specialists.gate import GateRecord

COST = TrainingCost(
    examples=1000,
    steps=8,
    epochs=2,
    flops_per_example=1e6,
    teacher_flops_per_example=0.0,
    parameters=500,
    train_flops=3e9,
    train_seconds=1.5,
    train_cpu_seconds=2.5,
    validation_seconds=0.1,
    wall_seconds=2.0,
    cpu_seconds=3.0,
    overhead_seconds=0.4,
    epochs_resumed=0,
)


def _json_round_trip(record):
    return json.loads(json.dumps(record.to_json()))


def test_the_cost_reads_back_and_refuses_bad_fields_by_name():
    assert TrainingCost.from_json(_json_round_trip(COST), "cost") == COST
    assert COST.examples_per_epoch == 500
    data = COST.to_json()
    for bad, match in (
        ({k: v for k, v in data.items() if k != "steps"}, r"cost: missing keys \['steps'\]"),
        ({**data, "gpu_hours": 1}, r"cost: unknown keys \['gpu_hours'\]"),
        ({**data, "train_flops": -1}, r"cost: 'train_flops' must be a finite number >= 0, got -1"),
        ({**data, "epochs": True}, r"cost: 'epochs' must be an int >= 0"),
        ({**data, "steps": 2.5}, r"cost: 'steps' must be an int >= 0, got 2.5"),
        ({**data, "wall_seconds": float("nan")}, r"cost: 'wall_seconds' must be"),
        ([], r"cost must be an object, got list"),
    ):
        with pytest.raises(CheckpointError, match=match):
            TrainingCost.from_json(bad, "cost")


def test_training_metrics_read_back_and_check_their_types():
    history = [EpochRecord(epoch=e, train_loss=1.0 / e, examples=10, steps=1, seconds=0.5) for e in (1, 2, 3)]
    m = TrainingMetrics(best_epoch=2, epochs_run=3, stopped_early=True, history=history)
    assert TrainingMetrics.from_json(_json_round_trip(m), "m") == m
    for key, value in (("best_epoch", -1), ("stopped_early", "no"), ("history", {"epoch": 1})):
        with pytest.raises(CheckpointError, match=f"m: '{key}' must be"):
            TrainingMetrics.from_json({**m.to_json(), key: value}, "m")
    with pytest.raises(CheckpointError, match=r"m: 'history'\[1\] must be an object, got int"):
        TrainingMetrics.from_json({**m.to_json(), "history": [history[0].to_json(), 2]}, "m")


def test_an_epoch_record_is_read_by_its_annotations_and_constraints():
    """The schema of :class:`~specens.core.records.Record`: the fields' types, their ``param``
    constraints, defaults that may be absent, ``None`` left out of the file, nested names."""
    from specens.generalist.checkpoint import GeneralistEpoch

    r = GeneralistEpoch(epoch=3, train_loss=0.5, examples=100, steps=4, seconds=1.0, train_top1=0.9, val_top1=0.8)
    data = r.to_json()
    assert "val_nll" not in data and "bn_examples" not in data and data["skipped"] == 0  # None is left out, 0 is not
    assert GeneralistEpoch.from_json(json.loads(json.dumps(data)), "e") == r
    old = {k: v for k, v in data.items() if k not in ("skipped", "cpu_seconds")}  # written before those fields
    assert GeneralistEpoch.from_json(old, "e") == r
    for bad, match in (
        ({**data, "epoch": 0}, r"e: 'epoch' must be an int >= 1, got 0"),
        ({**data, "val_top1": 1.5}, r"e: 'val_top1' must be a finite number >= 0 and <= 1 or null, got 1.5"),
        ({**data, "val_nll": "low"}, r"e: 'val_nll' must be a finite number >= 0 or null"),
        ({**data, "imported": 3}, r"e: 'imported' must be an object or null, got 3"),
        ({**data, "lr": 0.1}, r"e: unknown keys \['lr'\]"),
        ({k: v for k, v in data.items() if k != "epoch"}, r"e: missing keys \['epoch'\]"),
    ):
        with pytest.raises(CheckpointError, match=match):
            GeneralistEpoch.from_json(bad, "e")
    assert GeneralistEpoch.from_json({**data, "val_nll": None}, "e").val_nll is None  # null reads as not measured
    # every problem at once, the file named once, as a config lists all of its own
    with pytest.raises(CheckpointError, match=r"^e: 'epoch' must be an int >= 1, got 0; 'val_top1' must be .*, got 2$"):
        GeneralistEpoch.from_json({**data, "epoch": 0, "val_top1": 2}, "e")


def test_a_gate_record_is_either_ungated_or_fully_scored():
    ungated = GateRecord(on=True, why="no validation split: not gated")
    assert ungated.to_json() == {"on": True, "why": "no validation split: not gated"}  # no null fields on disk
    assert GateRecord.from_json(ungated.to_json(), "gate") == ungated
    scored = GateRecord(
        on=False,
        why="3 routed val examples: 2 -> 1 right",
        split="val",
        top_n=1,
        routed=3,
        generalist={"correct": 2, "nll": 0.5},
        combined={"correct": 1, "nll": 0.7},
    )
    assert GateRecord.from_json(_json_round_trip(scored), "gate") == scored
    partial = {k: v for k, v in scored.to_json().items() if k != "routed"}
    with pytest.raises(CheckpointError, match="gate: a scored gate needs top_n, routed"):
        GateRecord.from_json(partial, "gate")
    with pytest.raises(CheckpointError, match="gate: 'combined' must be an object with 'correct'"):
        GateRecord.from_json({**scored.to_json(), "combined": {"correct": 1}}, "gate")
    with pytest.raises(CheckpointError, match="gate: 'on' must be true or false"):
        GateRecord.from_json({**ungated.to_json(), "on": "yes"}, "gate")


def test_a_generalist_record_reads_back_with_and_without_training_metrics(tmp_path):
    from specens.generalist.checkpoint import (
        GeneralistEpoch,
        GeneralistMetrics,
        load_generalist,
        read_record,
        save_generalist,
    )
    from specens.generalist.models import ModelSpec

    spec = ModelSpec("mlp", (4,), 3, {"hidden": [8]})
    save_generalist(tmp_path / "bare", spec.build(), spec, ["a", "b", "c"])
    bare = read_record(tmp_path / "bare")
    bare_json = json.loads((tmp_path / "bare" / "model.json").read_text())
    assert bare.metrics is None and bare_json["metrics"] == {} and bare.to_json() == bare_json
    (tmp_path / "bare" / "model.json").write_text(json.dumps({**bare_json, "metrics": None}))  # none is {}
    with pytest.raises(CheckpointError, match=r"model.json: 'metrics' must be an object, got None"):
        read_record(tmp_path / "bare")
    metrics = GeneralistMetrics(
        best_epoch=1,
        epochs_run=1,
        stopped_early=False,
        history=[GeneralistEpoch(epoch=1, train_loss=0.1, train_top1=0.5)],
        teacher_fingerprints=[],
        cost=COST,
    )
    save_generalist(tmp_path / "trained", spec.build(), spec, ["a", "b", "c"], {"lr": 0.1}, metrics)
    g = load_generalist(tmp_path / "trained")
    assert g.record.metrics == metrics and g.record.config == {"lr": 0.1} and g.classes == ("a", "b", "c")
    assert g.record.model == json.loads(json.dumps(spec.to_json()))
    data = json.loads((tmp_path / "trained" / "model.json").read_text())
    data["metrics"]["cost"] = {**data["metrics"]["cost"], "steps": -3}
    (tmp_path / "trained" / "model.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"model.json: 'metrics'.cost.steps must be an int >= 0"):
        read_record(tmp_path / "trained")


def test_the_evaluation_report_round_trips_and_refuses_a_bad_field(tmp_path):
    import math

    from specens.core.io import write_json_atomic
    from specens.inference.evaluate import EnsembleTally
    from specens.inference.report import EnsembleCost, EvaluationReport, InferenceCost, SpecialistsCost

    t = EnsembleTally(torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool))
    p = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    t.update(p, p.flip(1), torch.tensor([[True, False], [False, True], [True, True]]), torch.tensor([1, 0, 1]))
    inference = InferenceCost(1.0, 1.3, {"generalist": 10.0, "specialist": 2.0}, 1.26, None, {"generalist": 0.5})
    cost = EnsembleCost(COST, SpecialistsCost.total([COST, COST]), inference)
    r = dataclasses.replace(t.result(), dataset="d", split="test", specialists_on=(0, 1), cost=cost)
    assert cost.specialists_over_generalist == pytest.approx(2.0) and cost.specialists.count == 2
    write_json_atomic(tmp_path / "evaluation.json", r.to_json())
    back = EvaluationReport.read(tmp_path / "evaluation.json")
    assert any(math.isnan(row.relative_improvement) for row in back.table4)  # null on disk, NaN in memory
    assert back.to_json() == _json_round_trip(r) and back.cost == cost
    data = r.to_json()
    assert list(data)[:3] == ["format", "format_version", "n"] and list(data)[-1] == "conditional_relative_improvement"
    assert t.result().to_json()["cost"] is None  # no cost (an empty split): null on disk, not left out
    data["routing"] = {**data["routing"], "missed": -1}
    with pytest.raises(CheckpointError, match=r"e.json: 'routing'.missed must be an int >= 0"):
        EvaluationReport.from_json(data, "e.json")
    for key, value, match in (
        ("table4", [{**r.to_json()["table4"][0], "count": -1}], r"e.json: 'table4'\[0\].count must be an int >= 0"),
        ("specialists_on", [0, -1], r"e.json: 'specialists_on' must be a list of ints >= 0, got \[0, -1\]"),
        ("cost", {**r.to_json()["cost"], "generalist": 3}, r"e.json: 'cost'.generalist must be an object"),
    ):
        with pytest.raises(CheckpointError, match=match):
            EvaluationReport.from_json({**r.to_json(), key: value}, "e.json")
    with pytest.raises(CheckpointError, match=r"'format_version' is 0.*rerun `specens evaluate`"):
        write_json_atomic(tmp_path / "evaluation.json", {**r.to_json(), "format_version": 0})
        EvaluationReport.read(tmp_path / "evaluation.json")


def test_the_baseline_report_round_trips_and_refuses_a_bad_row(tmp_path):
    from specens.core.io import write_json_atomic
    from specens.inference.baseline_report import BaselineReport, BaselineRow, Budget

    rows = {
        "generalist": BaselineRow(0.8, 0.6, 10.0, 1e9, 1e6, 1e-4),
        "seeds": BaselineRow(0.85, 0.5, 20.0, 2e9, 2e6, 2e-4, members=2),
        "tfidf": BaselineRow(0.7, 0.9, 3.0),
    }
    report = BaselineReport("test", Budget(1e9, 1e9, examples=1000, seeds=2), rows)
    assert "train_flops" not in report.to_json()["rows"]["tfidf"]  # not counted: left out, not null
    write_json_atomic(tmp_path / "baselines.json", report.to_json())
    assert BaselineReport.read(tmp_path / "baselines.json") == report
    bad = report.to_json()
    bad["rows"]["seeds"]["members"] = 1.5
    with pytest.raises(CheckpointError, match=r"b.json: 'rows'.seeds.members must be an int >= 0 or null"):
        BaselineReport.from_json(bad, "b.json")
    with pytest.raises(CheckpointError, match=r"unknown keys \['k'\]"):
        BaselineReport.from_json({**report.to_json(), "k": 1}, "b.json")


def test_the_distillation_report_round_trips_and_refuses_a_bad_field(tmp_path):
    from specens.core.io import write_json_atomic
    from specens.inference.distill_report import DistillReport, ModelRow, StudentTraining

    rows = {
        name: ModelRow(0.8 + i / 100, 0.95, 0.5, 1e6 * (1 + i), 1e-4)
        for i, name in enumerate(("generalist", "ensemble", "student"))
    }
    report = DistillReport(
        dataset="d",
        split="test",
        n=100,
        rows=rows,
        ensemble_gain=0.01,
        student_gain=0.02,
        kept=2.0,
        student_over_generalist_seconds=1.0,
        ensemble_over_generalist_seconds=1.3,
        mean_active_specialists=0.4,
        student_training=StudentTraining(None, None, None, None),  # a student exported without training
        generalist_training_flops=3e9,
        fingerprints={"student": "ab"},
        baselines={"continued": {"top1": 0.9, "nll": 0.3}},
    )
    write_json_atomic(tmp_path / "distill.json", report.to_json())
    assert DistillReport.read(tmp_path / "distill.json") == report
    bad = report.to_json()
    bad["rows"]["student"]["nll"] = "low"
    with pytest.raises(CheckpointError, match=r"d.json: 'rows'.student.nll must be a finite number"):
        DistillReport.from_json(bad, "d.json")
    with pytest.raises(CheckpointError, match=r"d.json: 'rows' must be an object of generalist, ensemble, student"):
        DistillReport.from_json({**report.to_json(), "rows": {"student": bad["rows"]["generalist"]}}, "d.json")
    with pytest.raises(CheckpointError, match=r"d.json: 'baselines' must be an object of \{top1, nll\}"):
        DistillReport.from_json({**report.to_json(), "baselines": {"seeds": {"top1": 0.9}}}, "d.json")
    unkept = dataclasses.replace(report, kept=None, student_training=StudentTraining(3e9, 1e6, 2.0, 3))
    assert DistillReport.from_json(_json_round_trip(unkept), "d.json") == unkept
    write_json_atomic(tmp_path / "distill.json", {**report.to_json(), "format_version": 0})
    with pytest.raises(CheckpointError, match=r"'format_version' is 0.*rerun `specens distill`"):
        DistillReport.read(tmp_path / "distill.json")


def test_the_predictions_manifest_round_trips_and_reads_one_written_before_specialist_weight():
    from specens.inference.infer import InferManifest

    m = InferManifest(
        fingerprints={"generalist": "ab", "specialists": ["cd"]},
        n_specialists=2,
        specialists_on=[0, 1],
        dataset="d",
        split="test",
        shards=["test-000000.tar"],
        top_k=5,
        top_n=1,
        save_q=True,
        method="product",
        specialist_weight=0.5,
        batch_size=64,
        complete=False,
    )
    data = _json_round_trip(m)
    assert list(data)[:2] == ["format", "format_version"] and "n_samples" not in data  # written once complete
    assert InferManifest.from_json(data, "infer.json") == m
    old = {k: v for k, v in data.items() if k != "specialist_weight"}
    assert InferManifest.from_json(old, "infer.json").specialist_weight == 1.0
    done = dataclasses.replace(m, complete=True, n_samples=40)
    assert InferManifest.from_json(_json_round_trip(done), "infer.json") == done
    for key, value, match in (
        ("shards", "test-000000.tar", r"infer.json: 'shards' must be a list of strings"),
        ("specialists_on", [0, "1"], r"infer.json: 'specialists_on' must be a list of ints >= 0"),
        ("n_samples", -1, r"infer.json: 'n_samples' must be an int >= 0 or null, got -1"),
        ("save_q", 1, r"infer.json: 'save_q' must be true or false"),
    ):
        with pytest.raises(CheckpointError, match=match):
            InferManifest.from_json({**data, key: value}, "infer.json")


def test_a_record_reads_tuples_objects_of_records_and_an_artifacts_header():
    """The schema of :class:`~specens.core.records.Record` beyond single values: ``tuple[X, ...]``
    (a list on disk, a tuple again in memory), an object of records, a constraint on each number of
    a list or object, and ``ARTIFACT``: the header written first and not read as a field."""
    from specens.core.config import param
    from specens.core.records import Record

    @dataclasses.dataclass(frozen=True)
    class Row(Record):
        n: int = param(ge=0)

    @dataclasses.dataclass(frozen=True)
    class File(Record):
        ARTIFACT = ("specens.test", 3)

        rows: tuple[Row, ...]
        by_name: dict[str, Row]
        picked: tuple[int, ...] = param((), ge=0)
        seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    f = File((Row(1), Row(2)), {"a": Row(3)}, picked=(0, 2), seconds={"g": 0.5})
    data = _json_round_trip(f)
    assert data == {
        "format": "specens.test",
        "format_version": 3,
        "rows": [{"n": 1}, {"n": 2}],
        "by_name": {"a": {"n": 3}},
        "picked": [0, 2],
        "seconds": {"g": 0.5},
    }
    assert list(data)[:2] == ["format", "format_version"]
    back = File.from_json(data, "f.json")
    assert back == f and isinstance(back.rows, tuple) and isinstance(back.picked, tuple)
    assert File.from_json({k: v for k, v in data.items() if k not in ("format", "format_version")}, "f.json") == f
    for key, value, match in (
        ("rows", [{"n": 1}, {"n": -1}], r"f.json: 'rows'\[1\].n must be an int >= 0, got -1"),
        ("rows", {"n": 1}, r"f.json: 'rows' must be a list of objects"),
        ("by_name", {"a": {"n": "x"}}, r"f.json: 'by_name'.a.n must be an int >= 0, got 'x'"),
        ("by_name", [], r"f.json: 'by_name' must be an object of objects, got \[\]"),
        ("picked", [1, -2], r"f.json: 'picked' must be a list of ints >= 0, got \[1, -2\]"),
        ("picked", [1, 2.0], r"f.json: 'picked' must be a list of ints >= 0"),
        ("seconds", {"g": "x"}, r"f.json: 'seconds' must be an object of finite numbers"),
    ):
        with pytest.raises(CheckpointError, match=match):
            File.from_json({**data, key: value}, "f.json")
    with pytest.raises(CheckpointError, match=r"r: unknown keys \['format'\]"):  # only an artifact has a header
        Row.from_json({"format": "specens.test", "n": 1}, "r")


def test_an_int_beyond_any_float_in_a_float_field_is_refused_not_an_overflow():
    """JSON holds integers of any length: one past float's range, where a number is wanted, is a
    refusal naming the key, not an OverflowError from math.isfinite."""
    from specens.specialists.fit import GroupScores

    row = {"n": 1, "generalist_top1": 10**400, "specialist_top1": 0.5, "generalist_nll": 1.0, "specialist_nll": 1.0}
    with pytest.raises(CheckpointError, match="'generalist_top1' must be a finite number"):
        GroupScores.from_json(row, "fit.json")
