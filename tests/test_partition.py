"""The specialists' one-pass partition (specialists/partition.py, data/parts.py): each group's part
holds exactly what filtering the full splits finds, and it is reused only while it is current."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from specens.data.format import load_info
from specens.data.parts import partition_split
from specens.data.shards import InOrder, Labels, Pipeline, Read, Split, iter_split
from specens.generalist.checkpoint import load_generalist
from specens.specialists.gate import RoutedValidation
from specens.specialists.partition import MANIFEST, ensure_partition, partition_dir
from specens.specialists.sampling import enriched_batches

# Overlapping groups (class 3 in two, class 19 in none): an example may belong to several parts or none.
GROUPS = [[0, 1, 2, 3], [3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17, 18]]


def _clusters(fp="c1"):
    return SimpleNamespace(groups=[np.array(g) for g in GROUPS], fingerprint=fp)


def _keys(root, split, info, *filters):
    samples = Pipeline(Split.of(root, split, info), InOrder(Read(*filters)))
    return {(k, int(y)): x.tobytes() for k, x, y in samples}


@pytest.mark.parametrize("top_n", [1, 2])
def test_parts_hold_exactly_what_the_filters_find(synthetic_run, tmp_path, top_n):
    data, info = synthetic_run["data"], load_info(synthetic_run["data"])
    gen = load_generalist(synthetic_run["generalist"])
    parts = ensure_partition(tmp_path, gen, _clusters(), data, info, "val", top_n, torch.device("cpu"))
    for m, group in enumerate(GROUPS):
        # training: the group's examples, each once, bytes for bytes
        root, part_info = parts.source(m, "train")
        assert _keys(root, "train", part_info) == _keys(data, "train", info, Labels(group))
        assert part_info.split("train").class_counts == tuple(
            c if i in group else 0 for i, c in enumerate(info.split("train").class_counts)
        )
        # validation: the examples whose top_n classes under the generalist meet the group,
        # as RoutedValidation finds them on the full split
        root, part_info = parts.source(m, "val")
        got = RoutedValidation.collect(
            gen.model, iter_split(root, "val", 64, info=part_info), torch.tensor(group), 0.3, top_n, "cpu", routed=True
        )
        want = RoutedValidation.collect(
            gen.model, iter_split(data, "val", 64, info=info), torch.tensor(group), 0.3, top_n, "cpu"
        )
        assert len(got) > 0 and torch.equal(got.inputs, want.inputs) and torch.equal(got.labels, want.labels)
        torch.testing.assert_close(got.p_general, want.p_general, rtol=0, atol=1e-6)


def test_a_partition_is_reused_while_current_and_rebuilt_otherwise(synthetic_run, tmp_path):
    data, info = synthetic_run["data"], load_info(synthetic_run["data"])
    gen = load_generalist(synthetic_run["generalist"])
    said = []
    build = lambda **kw: ensure_partition(
        tmp_path,
        gen,
        kw.get("clusters", _clusters()),
        data,
        info,
        kw.get("val", "val"),
        kw.get("top_n", 1),
        torch.device("cpu"),
        said.append,
    )
    build()
    manifest = partition_dir(tmp_path) / MANIFEST
    stamp = manifest.stat().st_mtime_ns
    build()
    assert len(said) == 1 and manifest.stat().st_mtime_ns == stamp  # reused: nothing written
    for change in (dict(top_n=2), dict(clusters=_clusters("c2")), dict(val="")):
        build(**change)
        assert manifest.stat().st_mtime_ns != stamp, change
        stamp = manifest.stat().st_mtime_ns
    assert len(said) == 4 and "partitioned the data for 4 specialists" in said[-1]
    assert build(val="").val is None
    # a partition whose build was interrupted (no manifest) is rebuilt
    manifest.unlink()
    assert build().val is not None and manifest.is_file()


def test_part_writer_spills_to_more_shards_without_losing_a_sample(synthetic_ds, tmp_path):
    """A tiny memory budget forces the writer to flush parts early: more shards, same samples."""
    info = load_info(synthetic_ds)
    membership = torch.zeros(len(GROUPS), info.n_classes, dtype=torch.bool)
    for m, g in enumerate(GROUPS):
        membership[m, g] = True
    assign = lambda x, y: membership[:, y].T
    roomy = partition_split(synthetic_ds, "train", tmp_path / "a", len(GROUPS), assign, info=info)
    tight = partition_split(
        synthetic_ds, "train", tmp_path / "b", len(GROUPS), assign, info=info, memory=20_000, shard_size=100
    )
    for m in range(len(GROUPS)):
        assert len(tight.split(m).shards) > len(roomy.split(m).shards) == 1
        a = _keys(roomy.root, "train", roomy.info(info, m, "train"))
        assert _keys(tight.root, "train", tight.info(info, m, "train")) == a
    with pytest.raises(ValueError, match="assign returned shape"):
        partition_split(synthetic_ds, "val", tmp_path / "c", 2, assign, info=info)


def test_enriched_batches_from_a_part_match_the_filtered_ones(synthetic_run, tmp_path):
    """Same composition (exactly half special, each epoch's special examples from S only) and,
    over an epoch that covers the group, the same examples as the split filtered to S."""
    data, info = synthetic_run["data"], load_info(synthetic_run["data"])
    gen = load_generalist(synthetic_run["generalist"])
    parts = ensure_partition(tmp_path, gen, _clusters(), data, info, "", 1, torch.device("cpu"))
    group = GROUPS[2]
    n_group = sum(info.split("train").class_counts[c] for c in group)
    # two DataLoader workers for a part of one shard: the part is read by one of them
    part_root, part_info = parts.source(2, "train")
    special = Split.of(part_root, "train", part_info)
    stream = enriched_batches(Split.of(data, "train", info), group, special, 40, n_group // 20, 0.5, 5, num_workers=2)
    seen = set()
    for b in stream:
        assert np.isin(b.labels[:20].numpy(), group).all() and not np.isin(b.labels[20:].numpy(), group).any()
        seen |= set(b.keys[:20])
    filtered = {k for k, _, _ in Pipeline(Split.of(data, "train", info), InOrder(Read(Labels(group))))}
    assert seen == filtered and len(seen) == n_group


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(train=5),
        lambda m: m["train"][0]["shards"][0].__setitem__(1, "many"),
        lambda m: m["train"][0]["counts"].update(x=3),
        lambda m: m["train"][0]["shards"][0].__setitem__(0, "../../elsewhere/train-0000-000000.tar"),
        lambda m: m.update(val=m["val"][:1]),
    ],
    ids=["train not a list", "a count not an int", "a class not an index", "a shard outside", "parts missing"],
)
def test_an_edited_partition_manifest_is_rebuilt_not_read(edit, synthetic_run, tmp_path):
    """groups.json is the run's own file, but a shared run is a stranger's: any edit that does not
    describe the partition makes it be rebuilt, never a traceback or a read outside it."""
    import json

    from specens.specialists.partition import load_partition, partition_key

    data, info = synthetic_run["data"], load_info(synthetic_run["data"])
    gen = load_generalist(synthetic_run["generalist"])
    ensure_partition(tmp_path, gen, _clusters(), data, info, "val", 1, torch.device("cpu"))
    key = partition_key(info, "c1", gen.fingerprint, "val", 1)
    assert load_partition(tmp_path, key, info, len(GROUPS)) is not None
    path = partition_dir(tmp_path) / MANIFEST
    original = json.loads(path.read_text())
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    assert load_partition(tmp_path, key, info, len(GROUPS)) is None
    ensure_partition(tmp_path, gen, _clusters(), data, info, "val", 1, torch.device("cpu"))
    assert json.loads(path.read_text()) == original  # rebuilt as it was


def test_a_part_counting_a_class_by_a_non_ascii_digit_is_refused_not_a_value_error():
    """A part keyed "²" (isdigit, but int("²") fails): a stranger's groups.json keyed so is refused."""
    from specens.core.errors import CheckpointError
    from specens.data.parts import Parts

    with pytest.raises(CheckpointError, match="'counts' must be keyed by class indices"):
        Parts.from_json("/nowhere", [{"shards": [["a.tar", 1]], "counts": {"²": 1}}], 10, "groups.json")
