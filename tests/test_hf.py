"""Your own generalist (issue 45): transformers classifiers and state dicts imported as
generalists, data tokenized by the model's own tokenizer, and specialists cut from them.

No weights can be downloaded here: the tests train a WordPiece tokenizer on the training texts with
the ``tokenizers`` library, build a two-layer BERT of hidden size 32 from a ``BertConfig``, save
both with ``save_pretrained`` and import them."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from click.testing import CliRunner  # noqa: E402

from specens.cli.main import cli  # noqa: E402
from specens.core.errors import SpecensError  # noqa: E402

# Six intents in three look-alike pairs: each pair shares its words but one.
INTENTS = {
    "card_freeze": ["freeze", "lock"],
    "card_lost": ["lost", "missing"],
    "bill_pay": ["pay", "settle"],
    "bill_view": ["show", "view"],
    "rate_today": ["today", "now"],
    "rate_history": ["history", "past"],
}
NOUN = {"card": "my card", "bill": "the bill", "rate": "the exchange rate"}
BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        for intent, verbs in INTENTS.items():
            filler = rng.choice(["please", "can you", "i want to", "help", ""])
            noun = NOUN[intent.split("_")[0]]
            rows.append((f"{filler} {rng.choice(verbs)} {noun} {rng.choice(['', 'thanks'])}", intent))
    return rows


def _save_model(root: Path, rows, id2label=None, **config) -> Path:
    """A tokenizer trained on ``rows``' texts and an untrained BERT classifier, saved as
    transformers saves them; the directory."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([t for t, _ in rows], trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.save_pretrained(root)
    labels = id2label if id2label is not None else dict(enumerate(reversed(sorted(INTENTS))))  # not the data's order
    label2id = {v: k for k, v in labels.items()}
    cfg = transformers.BertConfig(vocab_size=tok.get_vocab_size(), id2label=labels, label2id=label2id, **BERT | config)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory):
    """A saved BERT classifier directory and a dataset tokenized by its tokenizer."""
    root = tmp_path_factory.mktemp("hf")
    rows = _texts(40, 0)
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    model = _save_model(root / "model", rows)
    result = CliRunner().invoke(
        cli,
        ["data", "text", "--train", str(root / "train.csv"), "--out", str(root / "data"), "--tokenizer", str(model)]
        + ["--max-length", "16"],
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "model": model, "data": str(root / "data"), "rows": rows}


def test_the_blocks_compute_the_models_own_logits():
    from specens.generalist.hf import as_classifier, hf_model

    cfg = {"model_type": "bert", "vocab_size": 50, **BERT}
    model = hf_model(cfg, 5).eval()
    ids = torch.randint(5, 50, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[3, 3:] = 0, 0  # padded rows: the mask must reach every layer
    ids[mask == 0] = 0
    want = model(input_ids=ids, attention_mask=mask).logits
    got = as_classifier(model).eval()(torch.stack([ids, mask], 1))
    assert torch.allclose(got, want, atol=1e-6)
    body = as_classifier(model).eval().body
    unmasked = body(torch.stack([ids, torch.ones_like(mask)], 1))
    masked = body(torch.stack([ids, mask], 1))
    assert (unmasked[1] - masked[1]).abs().max() > 1e-4  # the mask reaches the features of padded rows
    assert torch.allclose(unmasked[0], masked[0], atol=1e-7)  # a row without padding: the same


def test_data_stores_ids_and_mask_and_the_tokenizers_identity(hf_setup):
    from tokenizers import Tokenizer

    from specens.core.io import fingerprint
    from specens.data.format import load_info
    from specens.data.shards import iter_split

    info = load_info(hf_setup["data"])
    assert info.input.shape == (2, 16) and info.input.dtype == "int64"
    assert info.featurizer.kind == "tokenizer"
    assert info.featurizer.fingerprint == fingerprint(hf_setup["model"] / "tokenizer.json")
    batch = next(iter(iter_split(hf_setup["data"], "train", 4)))
    tok = Tokenizer.from_file(str(hf_setup["model"] / "tokenizer.json"))
    x = batch.inputs[0]
    n = int(x[1].sum())
    text = tok.decode(x[0, :n].tolist())
    assert tok.encode(text).ids == x[0, :n].tolist()  # the stored ids are the tokenizer's, CLS ... SEP
    assert (x[0, n:] == info.featurizer.pad_token_id).all() and (x[1, n:] == 0).all()


def test_import_puts_the_heads_rows_in_the_datasets_class_order(hf_setup, tmp_path):
    from specens.data.format import load_info
    from specens.data.shards import iter_split
    from specens.generalist.checkpoint import load_generalist

    out = tmp_path / "gen"
    result = CliRunner().invoke(
        cli, ["generalist", "import", "--hf", str(hf_setup["model"]), "--data", hf_setup["data"], "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    g = load_generalist(out)
    info = load_info(hf_setup["data"])
    model = transformers.BertForSequenceClassification.from_pretrained(hf_setup["model"]).eval()
    x = next(iter(iter_split(hf_setup["data"], "val", 8))).inputs
    theirs = model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    order = [model.config.label2id[c] for c in info.classes]
    assert torch.allclose(g.model(x), theirs[:, order], atol=1e-5)
    record = json.loads((out / "model.json").read_text())
    assert record["metrics"]["history"][0]["val_top1"] >= 0 and record["model"]["name"] == "hf"
    assert record["metrics"]["cost"]["examples"] == 0  # no --epochs: no cost claimed


def test_import_refusals(hf_setup, tmp_path):
    """Every refusal is one line naming the file or key, before anything is written."""
    from specens.generalist.importing import import_hf

    def refused(model_dir, match, data=None, **kw):
        out = tmp_path / "out"
        with pytest.raises(SpecensError, match=match):
            import_hf(str(model_dir), data or hf_setup["data"], str(out), **kw)
        assert not out.exists()

    def variant(name: str, edit=None, drop=()) -> Path:
        d = tmp_path / name
        shutil.copytree(hf_setup["model"], d)
        if edit:
            cfg = json.loads((d / "config.json").read_text())
            edit(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        for f in drop:
            (d / f).unlink()
        return d

    refused(variant("code", lambda c: c.update(auto_map={"AutoModel": "x.y"})), "'auto_map' names code")
    refused(variant("remote", lambda c: c.update(trust_remote_code=True)), "'trust_remote_code'")
    refused(variant("gpt2", lambda c: c.update(model_type="gpt2")), "model_type 'gpt2' is not one specens builds")
    refused(variant("labels", lambda c: c.update(id2label={str(i): f"LABEL_{i}" for i in range(6)})), "placeholders")
    refused(variant("other", lambda c: c["id2label"].update({"0": "weather"})), "weather")
    refused(variant("wider", lambda c: c.update(hidden_size=64)), "do not fit the model: .*wrong shapes")
    refused(variant("nosafe", drop=["model.safetensors"]), "model.safetensors: no such file")
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(["a", "b", "c", "d", "e", "f"]))
    refused(hf_setup["model"], "not the dataset's 6 classes", classes_file=str(classes))


def test_the_tokenizer_identity_is_checked_at_every_stage(hf_setup, tmp_path):
    """A dataset tokenized by another tokenizer, or by the n-gram featuriser, is refused by the
    import, by training and by every stage that loads the generalist beside the data."""
    from specens.data.tables import import_text
    from specens.data.text import Tokenized
    from specens.generalist.checkpoint import load_generalist
    from specens.generalist.config import TrainConfig
    from specens.generalist.importing import import_hf
    from specens.generalist.train import train_generalist

    other = _save_model(tmp_path / "other", _texts(10, 1))  # another vocabulary
    for name, featurizer in (("retok", Tokenized(str(other), 16)), ("ngrams", None)):
        kw = {"featurizer": featurizer} if featurizer else {}
        import_text(str(hf_setup["root"] / "train.csv"), str(tmp_path / name), **kw)
    with pytest.raises(SpecensError, match="tokenized by tokenizer .* reads tokenizer"):
        import_hf(str(hf_setup["model"]), str(tmp_path / "retok"), str(tmp_path / "g1"))
    with pytest.raises(SpecensError, match="int64 inputs|not tokenized|input shape"):
        import_hf(str(hf_setup["model"]), str(tmp_path / "ngrams"), str(tmp_path / "g2"))
    import_hf(str(hf_setup["model"]), hf_setup["data"], str(tmp_path / "g"))
    g = load_generalist(tmp_path / "g")
    from specens.data.format import load_info

    with pytest.raises(SpecensError, match="tokenized by tokenizer"):
        g.check_fits(load_info(tmp_path / "retok"), "g", "retok")
    cfg = TrainConfig(
        data=str(tmp_path / "retok"), out=str(tmp_path / "t"), model="hf", epochs=1,
        model_kwargs={"config": {"model_type": "bert", "vocab_size": 120, **BERT},
                      "tokenizer": g.spec.kwargs["tokenizer"]},
    )  # fmt: skip
    with pytest.raises(SpecensError, match="tokenized by tokenizer"):
        train_generalist(cfg, progress=False)


def test_a_model_recording_no_tokenizer_reads_no_data(hf_setup):
    """A spec whose tokenizer fingerprint is empty (a stranger's model.json, an explicit
    ``model_kwargs.tokenizer=""``) cannot say the data's ids are its own: refused."""
    from specens.data.format import load_info
    from specens.generalist.hf import check_tokenizer
    from specens.generalist.models import ModelSpec

    info = load_info(hf_setup["data"])
    spec = ModelSpec("hf", info.input.shape, 6, {"config": {"model_type": "bert", **BERT}, "tokenizer": ""})
    with pytest.raises(SpecensError, match="model.json records no tokenizer fingerprint"):
        check_tokenizer(spec, info.featurizer, "model.json", "dataset.json")


def test_the_wider_alternative_is_skipped_by_default_and_refused_by_name_for_a_transformer():
    from specens.core.errors import ConfigError
    from specens.generalist.models import ModelSpec
    from specens.inference.baselines import ALL_ALTERNATIVES, _applicable

    hf, mlp = ModelSpec("hf", (2, 8), 4, {}), ModelSpec("mlp", (8,), 4, {})
    said = []
    assert _applicable(None, hf, said.append) == ("continued", "seeds", "tfidf")
    assert said == ["wider: skipped: (c) the wider generalist is not defined for model 'hf' (no width specens "
                    "can scale and train)"]  # fmt: skip
    with pytest.raises(ConfigError, match="--only wider: .* not defined for model 'hf'"):
        _applicable(ALL_ALTERNATIVES, hf, said.append)  # named, even all of them
    assert _applicable(None, mlp, said.append) == ALL_ALTERNATIVES and len(said) == 1


def test_a_state_dict_of_a_specens_architecture_imports_as_the_same_model(synthetic_run, tmp_path):
    from safetensors.torch import save_file

    from specens.data.shards import iter_split
    from specens.generalist.checkpoint import load_generalist
    from specens.generalist.importing import import_state_dict

    g = load_generalist(synthetic_run["generalist"])
    state = {k: v.contiguous() for k, v in g.model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pt")
    x = next(iter(iter_split(synthetic_run["data"], "val", 16))).inputs
    for name in ("w.safetensors", "w.pt"):
        out = tmp_path / f"g-{name}"
        import_state_dict(str(tmp_path / name), synthetic_run["data"], str(out), "mlp", {"hidden": [64]}, epochs=3)
        h = load_generalist(out)
        assert torch.allclose(h.model(x), g.model(x))
        assert h.record.metrics.cost.epochs == 3 and h.record.metrics.cost.train_flops > 0
    with pytest.raises(SpecensError, match="wrong shapes"):
        import_state_dict(str(tmp_path / "w.pt"), synthetic_run["data"], str(tmp_path / "x"), "mlp", {"hidden": [32]})
    torch.save({"w": [1, 2]}, tmp_path / "bad.pt")
    with pytest.raises(SpecensError, match="mapping of parameter names to tensors"):
        import_state_dict(str(tmp_path / "bad.pt"), synthetic_run["data"], str(tmp_path / "y"), "mlp", {})


def test_a_shared_trunk_transformer_specialist_is_a_whole_one_with_its_lower_layers_frozen():
    """A specialist owning the top encoder layer, the pooler and its head, on the generalist's
    frozen embeddings and first layer, trains exactly as a whole-model copy whose lower blocks are
    frozen: the same predictions after the same steps (dropout off so both see the same net)."""
    from specens.generalist.hf import as_classifier, hf_model
    from specens.specialists.model import TrunkedSpecialist, build_specialist, specialist_loss, split_body

    torch.manual_seed(0)
    cfg = {"model_type": "bert", "vocab_size": 40, **BERT, "hidden_dropout_prob": 0.0}
    cfg["attention_probs_dropout_prob"] = 0.0
    gen = as_classifier(hf_model(cfg, 6)).eval()
    group = torch.tensor([1, 4])
    ids = torch.randint(5, 40, (64, 10))
    x = torch.stack([ids, torch.ones_like(ids)], 1)
    whole = build_specialist(gen, group, gen.body(x))
    shared = build_specialist(gen, group, gen.body(x), top_blocks=2)  # the last layer and the pooler
    assert isinstance(shared, TrunkedSpecialist)
    trunk, _ = split_body(whole.body, 2)
    for p in trunk.parameters():
        p.requires_grad_(False)
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05) for m in (whole, shared)]
    y = torch.randint(0, 6, (64,))
    for step in range(6):
        rows = slice(16 * (step % 4), 16 * (step % 4 + 1))
        for model, opt in zip((whole, shared), opts, strict=True):
            model.train()
            loss = specialist_loss(model(x[rows]), y[rows], None, group, 6, 0.0, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    whole.eval(), shared.eval()
    assert torch.allclose(whole(x), shared(x), atol=1e-5)
    assert not torch.allclose(whole(x), build_specialist(gen, group, gen.body(x)).eval()(x), atol=1e-3)


@pytest.mark.slow
def test_specialists_from_a_trained_transformer_end_to_end(hf_setup, tmp_path):
    """A BERT generalist trained by specens on the tokenized data, then clustering, whole-model and
    shared-trunk specialists (in-process), and the ensemble's evaluation with the fit report."""
    from specens.clustering.cluster import ClusterConfig, cluster
    from specens.generalist.config import TrainConfig
    from specens.generalist.train import train_generalist
    from specens.inference import Ensemble
    from specens.inference.evaluate import evaluate_ensemble
    from specens.specialists.parallel import train_all
    from specens.specialists.train import SpecialistConfig

    gen = train_generalist(
        TrainConfig(
            data=hf_setup["data"], out=str(tmp_path / "generalist"), model="hf", epochs=3, lr=3e-3, threads=0,
            batch_size=16,
            model_kwargs={"config": {"model_type": "bert", "vocab_size": 120, **BERT}},
        ),
        progress=False,
    )  # fmt: skip
    cluster(
        ClusterConfig(generalist=gen.run_dir, data=hf_setup["data"], out=str(tmp_path / "clusters"), n_groups=2),
        progress=False,
    )
    for trunk in (0, 2):
        out = tmp_path / f"run{trunk}"
        out.mkdir()
        for part in ("generalist", "clusters"):
            shutil.copytree(tmp_path / part, out / part)
        cfg = SpecialistConfig(
            generalist=str(out / "generalist"), clusters=str(out / "clusters" / "clusters.json"),
            data=hf_setup["data"], out=str(out), epochs=1, lr=3e-3, threads=1, shared_trunk=trunk,
        )  # fmt: skip
        train_all(cfg, local=True, echo=lambda *_: None)
        ens = Ensemble.load(out, device="cpu", all_specialists=True)
        assert (ens.trunk is not None) == bool(trunk)
        r = evaluate_ensemble(ens, hf_setup["data"], "val", progress=False)
        assert 0 <= r.ensemble.top1 <= 1 and r.fit  # every specialist's fit report is in the evaluation


@pytest.mark.slow
def test_the_five_documented_commands_from_a_model_directory_and_a_csv(hf_setup, tmp_path):
    """docs/own-generalist.md's path: tokenize with the model's tokenizer, import it (with the
    epochs it was trained for), cluster, train specialists, and the compute-matched table, where
    (c) is skipped with a line for a transformers model and (a) and (b) are trained."""
    from specens.inference.baseline_report import BaselineReport

    data, run, model = tmp_path / "data", tmp_path / "run", hf_setup["model"]
    csv_file = hf_setup["root"] / "train.csv"
    steps = [
        ["data", "text", "--train", csv_file, "--out", data, "--tokenizer", model, "--max-length", 16],
        ["generalist", "import", "--hf", model, "--data", data, "--out", run / "generalist", "--epochs", 1],
        ["cluster", "--generalist", run / "generalist", "--data", data, "--out", run / "clusters", "--groups", 2],
        ["specialists", "train", "--generalist", run / "generalist", "--clusters", run / "clusters" / "clusters.json"]
        + ["--data", data, "--out", run, "--local", "--set", "epochs=1", "--set", "lr=0.003"],
        ["baseline", "--run", run, "--data", data, "--threads", 1],
    ]
    for argv in steps:
        result = CliRunner().invoke(cli, [str(a) for a in argv])
        assert result.exit_code == 0, (argv[:2], result.output)
    assert "wider: skipped: (c) the wider generalist is not defined for model 'hf'" in result.output
    report = BaselineReport.from_json(json.loads((run / "baselines" / "baselines.json").read_text()), "baselines")
    assert set(report.rows) == {"generalist", "specialists", "continued", "seeds"}
    assert report.rows["continued"].train_flops > report.rows["generalist"].train_flops > 0


def test_an_import_records_the_recipe_it_was_trained_with(hf_setup, tmp_path):
    """--set records the optimiser settings the model was trained with, checked as training checks
    them, for `specens baseline` to train (a) and (b) with; anything else is refused."""
    result = CliRunner().invoke(
        cli,
        ["generalist", "import", "--hf", str(hf_setup["model"]), "--data", hf_setup["data"]]
        + ["--out", str(tmp_path / "g"), "--epochs", "3", "--set", "lr=0.001", "--set", "batch_size=32", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "g" / "model.json").read_text())["config"]
    assert (config["lr"], config["batch_size"], config["epochs"], config["model"]) == (0.001, 32, 3, "hf")
    for bad, culprit in (("patience=3", "records only its training recipe"), ("lr=-1", "lr must be")):
        result = CliRunner().invoke(
            cli, ["generalist", "import", "--hf", str(hf_setup["model"]), "--data", hf_setup["data"]]
            + ["--out", str(tmp_path / "h"), "--set", bad],
        )  # fmt: skip
        assert result.exit_code == 1 and culprit in result.output and not (tmp_path / "h").exists()
