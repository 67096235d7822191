"""Your own transformers generalist on CLINC150, as a newcomer runs it (issue 45).

No weights can be downloaded here, so the "model a team already has" is made first, outside
specens, the way a transformers user makes one: a WordPiece tokenizer trained on CLINC150's
training texts (the ``tokenizers`` library) and a small BERT (``BertConfig``: ``--hidden`` units,
``--layers`` layers) fine-tuned from scratch by a plain PyTorch loop (AdamW, linear warm-up and
decay, ``--epochs``), both saved with ``save_pretrained``. Then the documented commands, every
default::

    specens data clinc150 --source SRC --out data --tokenizer model
    specens generalist import --hf model --data data --out run/generalist --epochs N --set lr=... (its recipe)
    specens cluster --generalist run/generalist --data data --out run/clusters
    specens specialists train --generalist run/generalist --clusters run/clusters/clusters.json --data data --out run
    specens baseline --run run --data data          # (a) continued, (b) k generalists; (c) skipped

Each step's wall time, the fit reports, and the compute-matched table on test are printed (and
appended to RESULTS.md with ``--record``). Rerunning reuses every finished step.

    python benchmarks/own_generalist.py --data-root ../shared/data --work runs/own --record
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
from pathlib import Path

from _results import markdown_table, record

BATCH, WEIGHT_DECAY = 32, 0.01  # the outside fine-tuning's, recorded by the import as its recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--work", default="runs/own")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10, help="the outside fine-tuning's epochs")
    ap.add_argument("--lr", type=float, default=1e-3, help="the outside fine-tuning's peak learning rate")
    ap.add_argument("--max-length", type=int, default=24)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src = Path(args.data_root) / "clinc150"
    times = {}

    model = work / "model"
    if not (model / "model.safetensors").is_file():
        t = time.perf_counter()
        train_outside(src, model, args)
        times["fine-tuning outside specens"] = time.perf_counter() - t
    data, run = work / "data", work / "run"
    steps = [
        ("specens data clinc150 --tokenizer", data / "dataset.json",
         ["data", "clinc150", "--source", src, "--out", data, "--tokenizer", model,
          "--max-length", args.max_length]),
        ("specens generalist import", run / "generalist" / "model.json",
         ["generalist", "import", "--hf", model, "--data", data, "--out", run / "generalist",
          "--epochs", args.epochs, "--set", f"lr={args.lr}", "--set", f"batch_size={BATCH}",
          "--set", f"weight_decay={WEIGHT_DECAY}"]),
        ("specens cluster", run / "clusters" / "clusters.json",
         ["cluster", "--generalist", run / "generalist", "--data", data, "--out", run / "clusters"]),
        ("specens specialists train", run / "specialists",
         ["specialists", "train", "--generalist", run / "generalist", "--clusters",
          run / "clusters" / "clusters.json", "--data", data, "--out", run]),
        ("specens baseline", run / "baselines" / "baselines.json",
         ["baseline", "--run", run, "--data", data]),
    ]  # fmt: skip
    for name, done, argv in steps:
        if done.exists() and name != "specens specialists train":
            continue
        t = time.perf_counter()
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        subprocess.run(["specens", *map(str, argv)], check=True, env=env)
        times[name] = time.perf_counter() - t
    table = _tables(run, times, args)
    print(table)
    if args.record:
        cmd = (
            f"python benchmarks/own_generalist.py --data-root {args.data_root} --hidden {args.hidden} "
            f"--layers {args.layers} --epochs {args.epochs} --lr {args.lr} --max-length {args.max_length}"
        )
        record("own_generalist clinc150", cmd, table)


def train_outside(src: Path, out: Path, args) -> None:
    """The team's own model: a tokenizer and a BERT classifier trained with transformers and
    PyTorch only, saved as transformers saves them (specens plays no part)."""
    import random

    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    full = json.loads((src / "data_full.json").read_text())
    train = full["train"]
    labels = sorted({c for _, c in train})
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([t for t, _ in train], trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in ("[CLS]", "[SEP]")]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={c: i for i, c in enumerate(labels)},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    enc = fast([t for t, _ in train], padding="max_length", truncation=True, max_length=args.max_length,
               return_tensors="pt")  # fmt: skip
    y = torch.tensor([labels.index(c) for _, c in train])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    batch, n = BATCH, len(y)
    total = args.epochs * math.ceil(n / batch)
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / (total - warm)))
    )
    rng = random.Random(0)
    for epoch in range(args.epochs):
        order = list(range(n))
        rng.shuffle(order)
        model.train()
        for i in range(0, n, batch):
            idx = torch.tensor(order[i : i + batch])
            step = model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=y[idx])
            opt.zero_grad()
            step.loss.backward()
            opt.step()
            sched.step()
        print(f"outside fine-tuning: epoch {epoch + 1} of {args.epochs}, last loss {step.loss.item():.3f}", flush=True)
    fast.save_pretrained(out)
    model.save_pretrained(out)


def _tables(run: Path, times: dict, args) -> str:
    from compute_matched import _table

    specs = [json.loads(p.read_text()) for p in sorted(run.glob("specialists/s*/specialist.json"))]
    verdicts = {}
    for s in specs:
        v = s["fit"]["verdict"]
        verdicts[v] = verdicts.get(v, 0) + 1
    fit = _pooled_fit(specs)
    lines = [
        markdown_table(["step", "wall s"], [[k, f"{v:.0f}"] for k, v in times.items()]),
        "",
        f"BERT hidden {args.hidden}, {args.layers} layers, fine-tuned {args.epochs} epochs outside specens; "
        f"{len(specs)} specialists, {sum(s['gate']['on'] for s in specs)} kept by the gate; fit verdicts "
        + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
        + f"; within-group top-1 pooled (generalist -> specialist): training {fit['train']}, validation {fit['val']}",
    ]
    baselines = run / "baselines" / "baselines.json"
    if baselines.is_file():
        lines += ["", _table(json.loads(baselines.read_text()))]
    return "\n".join(lines)


def _pooled_fit(specs: list[dict]) -> dict:
    out = {}
    for split in ("train", "val"):
        n = sum(s["fit"][split]["n"] for s in specs)
        g = sum(s["fit"][split]["generalist_top1"] * s["fit"][split]["n"] for s in specs) / max(n, 1)
        m = sum(s["fit"][split]["specialist_top1"] * s["fit"][split]["n"] for s in specs) / max(n, 1)
        out[split] = f"{g:.3f} -> {m:.3f}"
    return out


if __name__ == "__main__":
    main()
