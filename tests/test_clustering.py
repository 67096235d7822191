"""Clustering (docs/method.md §3): the covariance against numpy, planted groups recovered, options, errors."""

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score

from specens.clustering import ConfusionClusterer, CovarianceAccumulator, prediction_covariance
from specens.clustering.cluster import ClusterConfig, cluster, load_clusters
from specens.clustering.groups import assign_overlapping, column_features, confusion_scores
from specens.clustering.regime import regime_check
from specens.clustering.report import (
    ClusterReport,
    agreement,
    choose_n_groups,
    error_capture,
    n_groups_candidates,
    read_cluster_report,
)
from specens.core.errors import CheckpointError, ConfigError
from specens.data.synthetic import synthetic_predictions
from specens.generalist.checkpoint import load_generalist


def _random_probs(n, c, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, c))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[:5, 0] = 0.0  # exact zeros
    p[:5] /= p[:5].sum(1, keepdims=True)
    return p


@pytest.mark.parametrize("splits", [[300], [1, 299], [100, 100, 100], [7, 50, 13, 230]])
def test_covariance_equals_numpy_cov_for_any_batching(splits):
    p = _random_probs(300, 12)
    reference = np.cov(p, rowvar=False, bias=True)  # population normalisation: divide by N
    batches = np.split(p, np.cumsum(splits)[:-1])
    acc = prediction_covariance(batches, 12)
    assert acc.count == 300
    np.testing.assert_allclose(acc.covariance(), reference, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(acc.mean(), p.mean(0), rtol=1e-12)


def test_merged_partial_sums_in_any_order():
    p = _random_probs(400, 9, seed=1)
    parts = [CovarianceAccumulator(9, block=4).update(b) for b in np.split(p, [50, 170, 300])]
    reference = np.cov(p, rowvar=False, bias=True)
    for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]):
        total = CovarianceAccumulator(9)
        for i in order:
            total.merge(parts[i])
        np.testing.assert_allclose(total.covariance(), reference, rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="cannot merge"):
        CovarianceAccumulator(9).merge(CovarianceAccumulator(8))


def test_float32_storage_and_top_k():
    p = _random_probs(500, 20, seed=2)
    ref = np.cov(p, rowvar=False, bias=True)
    f32 = prediction_covariance([p], 20, dtype="float32").covariance()
    assert f32.dtype == np.float32 and np.abs(f32 - ref).max() < 1e-6
    full = prediction_covariance([p], 20, top_k=20)
    np.testing.assert_allclose(full.covariance(), ref, atol=1e-12)  # k = C is the exact update
    for k in (3, 8):
        acc = prediction_covariance([p], 20, top_k=k)
        err = np.abs(acc.covariance() - ref).sum()
        assert err <= acc.dropped_mass / acc.count + 1e-12  # the reported bound holds
        assert acc.dropped_mass > 0


def test_bad_probabilities():
    acc = CovarianceAccumulator(4)
    with pytest.raises(ValueError, match=r"row 1 sums to 2.000000, not 1 \(pass softmax outputs, not logits\)"):
        acc.update(np.array([[0.25] * 4, [0.5] * 4]))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.array([[np.nan, 0.5, 0.25, 0.25]]))
    with pytest.raises(ValueError, match=r"shape \(batch, 4\), got \(2, 3\)"):
        acc.update(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="negative"):
        acc.update(np.array([[-0.5, 0.5, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="seen no examples"):
        acc.covariance()
    with pytest.raises(ValueError, match="must be 2-d"):
        ConfusionClusterer(2).fit(np.full(4, 0.25))


def _planted(c=60, size=6, n=6000, seed=0):
    groups, batches = synthetic_predictions(n, c, size, seed=seed, batch_size=1000)
    acc = prediction_covariance((p for p, _ in batches), c)
    truth = np.empty(c, dtype=int)
    for i, g in enumerate(groups):
        truth[g] = i
    return acc.covariance(), truth, groups


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"algorithm": "minibatch"},
        {"n_components": 16},
        {"representation": "correlation"},
        {"representation": "offdiag"},
    ],
)
def test_planted_groups_recovered(kw):
    cov, truth, groups = _planted()
    cl = ConfusionClusterer(len(groups), random_state=0, **kw).fit_covariance(cov)
    assert adjusted_rand_score(truth, cl.labels_) >= 0.9
    assert all(g.dtype == np.int64 and np.all(np.diff(g) > 0) for g in cl.groups_)
    assert (cl.coverage() == 1).all()
    assert cl.confusability_.min() > 0.9  # each planted group's confusion stays inside it


def test_fit_from_probabilities_equals_fit_covariance():
    p = _random_probs(200, 10, seed=3)
    a = ConfusionClusterer(3, random_state=0).fit(p)
    b = ConfusionClusterer(3, random_state=0).fit_covariance(np.cov(p, rowvar=False, bias=True))
    assert [g.tolist() for g in a.groups_] == [g.tolist() for g in b.groups_]


def test_size_bounds():
    cov, truth, groups = _planted()  # 10 groups of 6
    big = ConfusionClusterer(3, max_size=8, random_state=0).fit_covariance(cov)
    assert max(len(g) for g in big.groups_) <= 8 and sorted(np.concatenate(big.groups_)) == list(range(60))
    small = ConfusionClusterer(20, min_size=4, small="drop", random_state=0).fit_covariance(cov)
    assert min(len(g) for g in small.groups_) >= 4
    merged = ConfusionClusterer(20, min_size=4, small="merge", random_state=0).fit_covariance(cov)
    assert min(len(g) for g in merged.groups_) >= 4 and (merged.coverage() >= 1).all()


def test_overlap_by_distance_ratio():
    d = np.array([[1.0, 1.2, 3.0], [2.0, 1.0, 1.9], [5.0, 5.0, 1.0]])
    assert [g.tolist() for g in assign_overlapping(d, None)] == [[0], [1], [2]]
    assert [g.tolist() for g in assign_overlapping(d, 1.25)] == [[0], [0, 1], [2]]
    assert [g.tolist() for g in assign_overlapping(d, 2.0)] == [[0, 1], [0, 1], [1, 2]]
    cov, truth, groups = _planted(c=40, size=8, n=4000)
    disjoint = ConfusionClusterer(5, random_state=0).fit_covariance(cov)
    assert (disjoint.coverage() == 1).all()
    dist = np.linalg.norm(disjoint.features_[:, None] - disjoint.cluster_centers_[None], axis=2)  # (C, K)
    ratio = np.sort(dist, 1)[:, 1] / np.sort(dist, 1)[:, 0]
    r = float(np.median(ratio))
    loose = ConfusionClusterer(5, overlap=r, random_state=0).fit_covariance(cov)
    np.testing.assert_array_equal(loose.coverage(), (dist <= r * dist.min(1, keepdims=True) + 1e-12).sum(1))
    assert loose.coverage().max() >= 2


def test_several_runs_are_merged_and_deduplicated():
    cov, truth, groups = _planted(c=40, size=8, n=4000)
    runs = ConfusionClusterer(5, n_runs=3, random_state=0).fit_covariance(cov)
    assert len(runs.groups_) == 5  # the three seeds find the same planted groups: kept once
    runs_k = ConfusionClusterer(4, n_runs=3, random_state=0).fit_covariance(cov)  # K below the truth: runs differ
    assert len({tuple(g) for g in runs_k.groups_}) == len(runs_k.groups_) >= 4


def test_unconfused_classes_stay_with_the_generalist():
    cov, truth, groups = _planted(c=30, size=6, n=3000)
    cov = cov.copy()
    lone = 7
    off = np.arange(30) != lone
    cov[lone, off] = cov[off, lone] = -1e-9  # class 7 is confused with nothing
    assert confusion_scores(cov)[lone] == 0
    cl = ConfusionClusterer(5, min_confusion=0.05, random_state=0).fit_covariance(cov)
    assert cl.labels_[lone] == -1 and cl.coverage()[lone] == 0


def test_diagonal_dominates_literal_columns():
    """The literal columns' distances are mostly the diagonal: why the default removes it."""
    cov, _, _ = _planted(c=30, size=6, n=3000)
    lit = column_features(cov, "literal")
    assert np.allclose(np.diag(column_features(cov, "offdiag")), 0)
    d = np.linalg.norm(lit[0] - lit[1]) ** 2
    assert (cov[0, 0] - cov[0, 1]) ** 2 + (cov[1, 1] - cov[1, 0]) ** 2 > 0.5 * d


def test_parameter_and_fitting_errors():
    cov, _, _ = _planted(c=30, size=6, n=3000)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ConfusionClusterer(3).coverage()
    with pytest.raises(ValueError, match=r"n_groups must be below the 30 classes \(a specialist's dustbin .*got 31"):
        ConfusionClusterer(31).fit_covariance(cov)
    with pytest.raises(
        ValueError,
        match="'overlap' parameter .* must be a float in the range \\[1.0, inf\\) or None.*'small' parameter",
    ):
        ConfusionClusterer(3, overlap=0.5, small="keep").fit_covariance(cov)
    with pytest.raises(ValueError, match="not symmetric"):
        ConfusionClusterer(3).fit_covariance(cov + np.triu(np.ones_like(cov)))
    with pytest.raises(ValueError, match="square"):
        ConfusionClusterer(3).fit_covariance(cov[:5])


def test_error_capture_by_hand():
    groups = [np.array([0, 1]), np.array([1, 2]), np.array([3, 4])]
    y_true = np.array([0, 1, 2, 3, 0, 4, 2, 1])
    y_pred = np.array([1, 2, 2, 0, 0, 3, 0, 0])
    # errors: (0→1) in group 0; (1→2) in group 1; (3→0) none; (4→3) group 2; (2→0) none; (1→0) group 0
    cap = error_capture(groups, y_true, y_pred, 5)
    assert cap["errors"] == 6
    assert cap["captured"] == pytest.approx(4 / 6)
    assert cap["per_group"] == pytest.approx([2 / 6, 1 / 6, 1 / 6])
    agr = agreement(np.array([0, 0, 1, 1, -1]), np.array([0, 0, 1, 1, 2]))
    assert agr["ari"] == pytest.approx(1.0) and agr["purity"] == 1.0


def test_report_outputs(tmp_path):
    cov, truth, groups = _planted(c=30, size=6, n=3000)
    cl = ConfusionClusterer(5, random_state=0).fit_covariance(cov)
    names = [f"k{i}" for i in range(30)]
    rep = ClusterReport(cl.groups_, names, cov, np.array([0, 1]), np.array([1, 1]), truth, cl.labels_)
    d = json.loads(json.dumps(rep.to_json()))
    assert d["coverage"] == {"1": 30} and d["agreement"]["ari"] >= 0.9 and len(d["groups"]) == 5
    text = rep.table()
    assert "5 groups over 30 classes" in text and "ARI 1.000" in text
    paths = rep.save_plots(tmp_path)
    assert [p.name for p in paths] == ["covariance.png", "group_sizes.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_glyph_groups_agree_with_base_letters(glyph_generalist, glyph_ds, tmp_path):
    """On real glyph predictions, the groups agree with the base-letter grouping far above chance."""
    from specens.data.format import load_info

    info = load_info(glyph_ds)
    k = sum(len(g) > 1 for g in info.groups)
    report = cluster(
        ClusterConfig(
            generalist=glyph_generalist, data=glyph_ds, out=str(tmp_path), split="train", n_groups=k, min_size=1
        ),
        progress=False,
    )
    ari = report.agreement()["ari"]
    rng = np.random.default_rng(0)
    chance = np.mean([adjusted_rand_score(info.group_labels(), rng.permutation(report.labels)) for _ in range(50)])
    # The 30-class set is one large base-letter group and three pairs, which K-means splits;
    # seen: ARI 0.19 against 0.004 for the same group sizes at random, 94% of errors captured.
    assert ari >= 0.1 and ari > chance + 0.1, (ari, chance)
    assert report.error_capture()["captured"] >= 0.7
    clusters = load_clusters(tmp_path / "clusters.json")
    assert sum(len(g) for g in clusters.groups) == 30


def test_clusters_json_checks(glyph_generalist, glyph_ds, tmp_path):
    cluster(ClusterConfig(generalist=glyph_generalist, data=glyph_ds, out=str(tmp_path), n_groups=4), progress=False)
    from specens.generalist.checkpoint import load_generalist

    fp = load_generalist(glyph_generalist).fingerprint
    assert load_clusters(tmp_path / "clusters.json", fp, 30).generalist_fingerprint == fp
    with pytest.raises(
        CheckpointError, match=r"clusters.json: made from generalist [0-9a-f]{16}, but the generalist given is 0000"
    ):
        load_clusters(tmp_path / "clusters.json", "0000")
    d = json.loads((tmp_path / "clusters.json").read_text())
    for groups, message in (
        ([[0, 1], []], "group 1 is empty"),
        ([[0, 30]], r"group 0 has classes outside \[0, 30\)"),
        ([[2, 2]], "group 0 repeats a class"),
    ):
        bad = (
            tmp_path.parent / f"{tmp_path.name}-bad.json"
        )  # not inside the clustering's --out, which holds its files only
        bad.write_text(json.dumps({**d, "groups": groups}))
        with pytest.raises(CheckpointError, match=message):
            load_clusters(bad)
    with pytest.raises(ConfigError, match="n_groups must be below the 30 classes of"):
        cluster(
            ClusterConfig(generalist=glyph_generalist, data=glyph_ds, out=str(tmp_path), n_groups=31), progress=False
        )


def test_n_groups_candidates():
    assert n_groups_candidates(1000, 8, 32) == [2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert n_groups_candidates(150, 8, 32) == [2, 3, 4, 6, 8, 12, 16]  # groups of >= 8 classes on average
    assert n_groups_candidates(77, 8, 32) == [2, 3, 4, 6, 8]
    assert n_groups_candidates(10, 8, 32) == [2]  # too few classes for the bound: still two groups
    assert n_groups_candidates(1000, 1, 6) == [2, 3, 4, 6]


def test_choose_n_groups_against_brute_force():
    """The largest K whose groups capture >= min_capture of the errors, on random errors and
    contiguous-block groups (capture falls as the blocks shrink), against a direct count."""
    rng = np.random.default_rng(0)
    c = 96
    blocks = lambda k: np.array_split(np.arange(c), k)  # noqa: E731
    y_true = rng.integers(0, c, 500)
    y_pred = np.clip(y_true + rng.integers(-10, 11, 500), 0, c - 1)  # confusions between nearby classes
    for min_capture in (0.3, 0.5, 0.7, 0.95):
        k, rows = choose_n_groups(blocks, y_true, y_pred, c, min_capture=min_capture, min_mean_size=4, max_groups=24)
        wrong = y_true != y_pred
        brute = {}
        for kk in (2, 3, 4, 6, 8, 12, 16, 24):
            label = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks(kk))])
            brute[kk] = float(np.mean(label[y_true[wrong]] == label[y_pred[wrong]]))
        assert [r["k"] for r in rows] == list(brute) and np.allclose(
            [r["captured"] for r in rows], list(brute.values())
        )
        passing = [kk for kk, v in brute.items() if v >= min_capture]
        assert k == (max(passing) if passing else max(brute, key=brute.get)), (min_capture, k, brute)
    assert choose_n_groups(blocks, y_true, y_true, c)[0] == 8  # no errors to capture: 8 groups (or fewer)


def test_cluster_chooses_n_groups(glyph_generalist, glyph_ds, tmp_path):
    """n_groups = "auto" (the default): K from the error capture on the transfer split, recorded in
    report.json, printed by the summary, and equal to what choose_n_groups picks."""
    report = cluster(
        ClusterConfig(
            generalist=glyph_generalist, data=glyph_ds, out=str(tmp_path), split="train", min_mean_size=3, min_size=1
        ),
        progress=False,
    )
    search = json.loads((tmp_path / "report.json").read_text())["n_groups_search"]
    tried = {r["k"]: r["captured"] for r in search["tried"]}
    assert list(tried) == n_groups_candidates(30, 3, 32) == [2, 3, 4, 6, 8]
    passing = [k for k, v in tried.items() if v >= 0.5]
    assert search["chosen"] == (max(passing) if passing else max(tried, key=tried.get))
    assert len(report.groups) == search["chosen"]  # min_size 1: nothing merged
    assert report.error_capture()["captured"] == pytest.approx(tried[search["chosen"]])
    assert f"K = {search['chosen']} chosen" in report.summary()
    assert ClusterConfig.n_groups == "auto" == ConfusionClusterer().get_params()["n_groups"]
    # the regime check, on this generalist's record and this capture, stored and printed
    regime = json.loads((tmp_path / "report.json").read_text())["regime"]
    record = load_generalist(glyph_generalist).record.metrics
    expected = regime_check(record, report.error_capture()["captured"], 40.0)
    assert regime == expected.to_json() and report.summary().endswith(expected.line())
    typed = read_cluster_report(tmp_path / "report.json")  # the same file through its record
    assert typed == report.record() and typed.n_groups_search.chosen == search["chosen"]
    assert typed.regime.line() == expected.line() and typed.transfer_samples == report.transfer_samples


def test_cluster_config_passes_the_estimator_parameters_through_with_its_defaults():
    """One source for every clustering default: ClusterConfig holds every ConfusionClusterer
    parameter (n_groups and the automatic choice's too) at the estimator's own defaults, and hands
    them over as they are, so the two cannot diverge."""
    import dataclasses

    from specens.clustering.cluster import ESTIMATOR_FIELDS
    from specens.core import options

    est = ConfusionClusterer().get_params()
    assert set(ESTIMATOR_FIELDS) == set(est)
    defaults = {f.name: f.default for f in dataclasses.fields(ClusterConfig)}
    assert {k: defaults[k] for k in ESTIMATOR_FIELDS} == {k: est[k] for k in ESTIMATOR_FIELDS}
    assert est["representation"] == "offdiag-scaled"  # the value every README and RESULTS figure used
    cfg = ClusterConfig(generalist="g", data="d", out="o", n_groups=5, overlap=1.5, max_size=9, n_components=16)
    assert cfg.clusterer().get_params() == {**est, "n_groups": 5, "overlap": 1.5, "max_size": 9, "n_components": 16}
    for earlier in (0, "0"):  # how configs and --groups asked for the automatic K before "auto"
        given = {"generalist": "g", "data": "d", "out": "o", "n_groups": earlier}
        assert options.load(ClusterConfig, None, given).clusterer().n_groups == "auto"
    with pytest.raises(
        ConfigError,
        match="'n_runs' parameter of ConfusionClusterer.*temperature must be > 0"
        "|temperature must be > 0.*'n_runs' parameter of ConfusionClusterer",
    ):
        ClusterConfig(generalist="g", data="d", out="o", n_runs=0, temperature=0.0)
    with pytest.raises(ConfigError, match="'min_capture' parameter of ConfusionClusterer must be a float in"):
        ClusterConfig(generalist="g", data="d", out="o", min_capture=1.5)
    with pytest.raises(ConfigError, match="device must be 'auto', 'cpu' or 'cuda"):  # the shared runtime part's check
        ClusterConfig(generalist="g", data="d", out="o", device="tpu")


def test_the_estimator_chooses_k_as_the_command_does():
    """ConfusionClusterer(n_groups="auto").fit(probs, y): K from the error capture of the model's
    top-1 predictions (choose_n_groups over the same candidates), and the groups of that K fitted
    directly; without labels, the no-error rule (8 or the largest candidate below)."""
    rng = np.random.default_rng(0)
    c, n = 48, 4000
    block = np.arange(c) // 6  # 8 planted blocks of 6 look-alike classes
    y = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c)) + 3 * (block[None, :] == block[y][:, None]) + 2 * np.eye(c)[y]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    auto = ConfusionClusterer(min_mean_size=3, random_state=0).fit(probs, y)
    tried = {r["k"]: r["captured"] for r in auto.n_groups_search_}
    assert list(tried) == n_groups_candidates(c, 3, 32)
    k, _ = choose_n_groups(
        lambda k: ConfusionClusterer(k, random_state=0).fit(probs).groups_, y, probs.argmax(1), c, min_mean_size=3
    )
    assert auto.n_groups_ == k and auto.n_groups == "auto"
    fixed = ConfusionClusterer(k, random_state=0).fit(probs)
    assert [g.tolist() for g in auto.groups_] == [g.tolist() for g in fixed.groups_]
    assert np.allclose(auto.cluster_centers_, fixed.cluster_centers_)
    unlabelled = ConfusionClusterer(min_mean_size=3, random_state=0).fit(probs)
    assert unlabelled.n_groups_ == 8 and unlabelled.n_groups_search_ == []


def test_the_report_carries_its_header_and_its_capture_is_read_typed(tmp_path):
    """report.json names its format like every artifact; the specialists' regime check reads the
    error capture through one reader, which gives None for a file that is not such a report, and
    reads a report written before the header (the same body) as it did then."""
    from specens.clustering.report import REPORT_FORMAT, read_error_capture

    groups = [np.array([0, 1]), np.array([2, 3])]
    y_true, y_pred = np.array([0, 1, 2, 3, 0]), np.array([1, 1, 3, 0, 0])  # errors 0->1, 2->3 inside, 3->0 across
    report = ClusterReport(groups, list("abcd"), y_true=y_true, y_pred=y_pred)
    report.save_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert (data["format"], data["format_version"]) == (REPORT_FORMAT, 1)
    assert read_error_capture(tmp_path / "report.json") == pytest.approx(2 / 3)
    body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    (tmp_path / "before.json").write_text(json.dumps(body))  # as specens cluster wrote it before the header
    assert read_error_capture(tmp_path / "before.json") == pytest.approx(2 / 3)
    for name, header in (("half.json", {"format_version": 1}), ("other.json", {"format": "x", "format_version": 1})):
        (tmp_path / name).write_text(json.dumps({**header, **body}))
        assert read_error_capture(tmp_path / name) is None
    (tmp_path / "v2.json").write_text(json.dumps({**data, "format_version": 2}))
    assert read_error_capture(tmp_path / "v2.json") is None and read_error_capture(tmp_path / "none.json") is None
    assert read_cluster_report(tmp_path / "before.json") == report.record()
    (tmp_path / "edited.json").write_text(json.dumps({**data, "n_groups": "2"}))  # a field mistyped: not a report
    with pytest.raises(CheckpointError, match=r"edited.json: 'n_groups' must be an int >= 0"):
        read_cluster_report(tmp_path / "edited.json")
    assert read_error_capture(tmp_path / "edited.json") is None


def test_clusters_json_is_a_typed_record(glyph_generalist, glyph_ds, tmp_path):
    """clusters.json round-trips through ClustersRecord; an unknown key or a mistyped field is
    refused by name, as every typed record's is."""
    from specens.clustering.cluster import ClustersRecord

    cluster(ClusterConfig(generalist=glyph_generalist, data=glyph_ds, out=str(tmp_path / "c"), n_groups=4), False)
    path = tmp_path / "c" / "clusters.json"
    data = json.loads(path.read_text())
    record = ClustersRecord.from_json(data, str(path))
    assert record.to_json() == data and not record.from_predictions and len(record.groups) == len(record.group_names)
    for change, message in (
        ({"extra": 1}, r"unknown keys \['extra'\]"),
        ({"n_classes": "30"}, "'n_classes' must be an int >= 2"),
        ({"config": []}, "'config' must be an object"),
        ({"generalist_fingerprint": None}, "'generalist_fingerprint' must be a string"),
    ):
        with pytest.raises(CheckpointError, match=message):
            ClustersRecord.from_json({**data, **change}, str(path))
