"""Compute-matched alternatives (issue 15): the baseline command on a tiny dataset."""

import json
import math

import pytest
import torch

from specens.generalist.checkpoint import load_generalist
from specens.generalist.config import TrainConfig
from specens.generalist.train import train_generalist


@pytest.fixture(scope="module")
def small_run(ensemble_run, tmp_path_factory):
    """A run directory as the commands lay it out: the synthetic generalist, its clusters and its 4
    specialists, copied from the session's ``ensemble_run`` (trained once for every test that reads
    them: the same generalist, groups and specialist config this fixture trained its own with)."""
    import shutil

    root = tmp_path_factory.mktemp("baseline_run")
    src = ensemble_run["root"]
    shutil.copytree(src / "generalist", root / "generalist", ignore=shutil.ignore_patterns("checkpoints"))
    for part in ("clusters", "specialists"):
        shutil.copytree(src / part, root / part)
    return root, ensemble_run["data"]


def test_init_continues_from_an_exported_generalist_and_refuses_another_model(synthetic_run, tmp_path):
    from specens.core.errors import ConfigError

    saved = load_generalist(synthetic_run["generalist"])
    cfg = dict(
        data=synthetic_run["data"],
        batch_size=64,
        model_kwargs={"hidden": [64]},
        threads=0,
        epochs=1,
        init=synthetic_run["generalist"],
    )
    res = train_generalist(TrainConfig(out=str(tmp_path / "a"), lr=1e-12, **cfg), progress=False)
    after = load_generalist(res.run_dir).model.state_dict()
    assert all(torch.allclose(after[k].float(), v.float(), atol=1e-6) for k, v in saved.model.state_dict().items())
    with pytest.raises(ConfigError, match="init .*: its model"):
        train_generalist(
            TrainConfig(out=str(tmp_path / "b"), **{**cfg, "model_kwargs": {"hidden": [32]}}), progress=False
        )


def test_baseline_command_trains_the_compute_matched_alternatives(small_run):
    from click.testing import CliRunner

    from specens.cli.main import cli
    from specens.inference.baselines import budget
    from specens.inference.ensemble import Ensemble

    root, data = small_run
    b = budget(Ensemble.load(root, device="cpu")).to_json()
    res = CliRunner().invoke(cli, ["baseline", "--run", str(root), "--data", data, "--split", "val"])
    assert res.exit_code == 0, res.output
    out = json.loads((root / "baselines" / "baselines.json").read_text())
    rows = out["rows"]
    assert set(rows) == {"generalist", "specialists", "continued", "seeds", "wider"}  # not text: no TF-IDF row
    assert all(0.2 < r["top1"] <= 1 and r["nll"] > 0 for r in rows.values())  # 8 classes: chance is 0.125
    g = load_generalist(root / "generalist").record.metrics.cost
    assert out["budget"]["generalist_flops"] == pytest.approx(g.train_flops)
    # (a) the specialists' FLOPs as generalist examples, in whole epochs of the training split
    n_train = g.examples // g.epochs
    cont = load_generalist(root / "baselines" / "continued").record
    assert cont.config["init"] == str(root / "generalist")
    assert cont.config["epochs"] == max(1, math.ceil(b["examples"] / n_train))
    assert rows["continued"]["train_flops"] == pytest.approx(g.train_flops + cont.metrics.cost.train_flops)
    # (b) k generalists whose cost matches generalist + specialists; k passes at inference
    k = rows["seeds"]["members"]
    assert k == max(2, round((b["generalist_flops"] + b["specialists_flops"]) / b["generalist_flops"]))
    assert load_generalist(root / "baselines" / f"seed{k - 1}").record.config["seed"] == k - 1
    assert rows["seeds"]["inference_flops_per_example"] == pytest.approx(
        k * rows["generalist"]["inference_flops_per_example"]
    )
    assert "(b) ensemble of generalists (k=" in res.output and "(a) generalist continued" in res.output
    # (c) a wider generalist at the ensemble's inference FLOPs, trained with generalist + specialists' FLOPs
    wide = rows["wider"]
    assert wide["inference_flops_per_example"] == pytest.approx(
        rows["specialists"]["inference_flops_per_example"], rel=0.10
    )
    assert wide["model_kwargs"]["hidden"][0] >= 64  # never narrower than the generalist's [64]
    wide_record = load_generalist(root / "baselines" / "wider").record
    assert wide_record.config["init"] == "" and wide_record.config["model_kwargs"] == wide["model_kwargs"]
    if not wide_record.metrics.stopped_early:  # the whole budget spent, to within one epoch
        per_epoch = wide_record.metrics.cost.train_flops / wide_record.metrics.cost.epochs
        assert 0 <= wide["train_flops"] - (b["generalist_flops"] + b["specialists_flops"]) <= per_epoch * 1.01
    # rerun with another thread count: a runtime setting, so every alternative is reused as it is
    again = CliRunner().invoke(
        cli, ["baseline", "--run", str(root), "--data", data, "--split", "val", "--threads", "1"]
    )
    untimed = lambda r: {
        **r,
        "rows": {k: {f: v for f, v in row.items() if f != "seconds_per_example"} for k, row in r["rows"].items()},
    }  # measured times differ run to run
    assert again.exit_code == 0, again.output
    assert untimed(json.loads((root / "baselines" / "baselines.json").read_text())) == untimed(out)  # reused
    assert all(row["seconds_per_example"] > 0 for key, row in out["rows"].items() if key != "tfidf")


def test_a_run_without_recorded_costs_is_refused_by_name(small_run):
    from specens.core.errors import ConfigError
    from specens.inference.baselines import budget
    from specens.inference.ensemble import Ensemble

    ens = Ensemble.load(small_run[0], device="cpu")
    ens.training_costs["generalist"] = None  # as if exported without training (no metrics in its model.json)
    with pytest.raises(ConfigError, match="carry no training cost"):
        budget(ens)


@pytest.mark.slow
def test_tfidf_on_hashed_ngrams_matches_tfidf_on_the_raw_texts(shared_data, tmp_path):
    """The baseline's features are the dataset's hashed word 1-2 and character 2-5 grams; on 20
    CLINC150 intents it is within a point of scikit-learn's TF-IDF on the raw texts."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    from specens.data.importers import read_clinc150
    from specens.data.tables import write_text_dataset
    from specens.data.text import HashedNgrams
    from specens.inference.baselines import tfidf_baseline

    classes, splits, _, _ = read_clinc150(str(shared_data / "clinc150"))
    keep = classes[:20]
    sub = {k: [(t, c) for t, c in rows if c in keep] for k, rows in splits.items()}
    write_text_dataset(str(tmp_path / "data"), "clinc20", keep, sub, HashedNgrams())
    hashed = tfidf_baseline(str(tmp_path / "data"), "test")
    raw = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LogisticRegression(C=10, max_iter=1000),
    )
    raw.fit([t for t, _ in sub["train"]], [c for _, c in sub["train"]])
    raw_top1 = raw.score([t for t, _ in sub["test"]], [c for _, c in sub["test"]])
    assert hashed["top1"] > 0.85 and abs(hashed["top1"] - raw_top1) < 0.01, (hashed, raw_top1)


def test_still_improving():
    """A generalist that used every epoch and was best in the last two is flagged; one that stopped
    early, or peaked well before its last epoch, is not."""
    from specens.core.loop import TrainingMetrics

    def still_improving(n: int, best: int, stopped: bool) -> bool:
        history = [{"epoch": i + 1} for i in range(n)]
        return TrainingMetrics(best_epoch=best, epochs_run=n, stopped_early=stopped, history=history).still_improving

    assert still_improving(6, 6, False)
    assert still_improving(6, 5, False)  # the demo's
    assert not still_improving(30, 25, False)  # CLINC150's
    assert not still_improving(24, 19, True)
    assert not still_improving(6, 6, True)
    assert not still_improving(0, 0, False)


@pytest.mark.parametrize(
    "name,kwargs,shape", [("resnet", {"width": 8, "depth": 1}, (1, 16, 16)), ("mlp", {"hidden": [32, 16]}, (12,))]
)
def test_wider_spec_meets_the_target_flops(name, kwargs, shape):
    from specens.core.cost import forward_flops
    from specens.generalist.models import ModelSpec
    from specens.inference.baselines import wider_spec

    spec = ModelSpec(name, shape, 50, kwargs).resolved()
    example = torch.zeros(4, *shape)
    f0 = forward_flops(spec.build(), example)
    for ratio in (1.0, 1.3, 2.5, 6.0):
        wide, f = wider_spec(spec, example, ratio * f0)
        assert f == pytest.approx(forward_flops(wide.build(), example))
        assert f == pytest.approx(ratio * f0, rel=0.10), (ratio, wide.kwargs)
    assert wider_spec(spec, example, 0.5 * f0)[0] == spec  # never narrower
