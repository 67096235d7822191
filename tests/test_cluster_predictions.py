"""``specens cluster --predictions``: groups from any model's predictions file equal the estimator's
on the same probabilities; the command end to end; the temperature on given probabilities."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score

from specens.cli.main import cli
from specens.clustering import ConfusionClusterer, cluster_predictions, load_predictions
from specens.clustering.cluster import ClusterConfig, load_clusters
from specens.core.errors import CheckpointError, ConfigError
from specens.core.io import fingerprint

N_GROUPS, PER_GROUP = 4, 4  # 16 intents in 4 topics


def _texts(n: int, rng) -> tuple[list[str], np.ndarray]:
    """Short "utterances": mostly words of the intent's topic (shared by its 4 intents), a few of
    the intent's own, so a classifier confuses intents within a topic and rarely across."""
    c = N_GROUPS * PER_GROUP
    labels = rng.integers(0, c, n)
    texts = []
    for y in labels:
        topic = [f"t{y // PER_GROUP}w{i}" for i in rng.integers(0, 12, 6)]
        own = [f"c{y}w{i}" for i in rng.integers(0, 4, 1 + rng.integers(0, 2))]
        noise = [f"n{i}" for i in rng.integers(0, 30, 2)]
        texts.append(" ".join(rng.permutation(topic + own + noise)))
    return texts, labels


@pytest.fixture(scope="module")
def logistic(tmp_path_factory):
    """TF-IDF + logistic regression fitted on synthetic text; its logits and probabilities on a
    held-out transfer set, saved as the two layouts of a predictions file."""
    rng = np.random.default_rng(0)
    train, y_train = _texts(1200, rng)
    held, y_held = _texts(600, rng)
    tfidf = TfidfVectorizer(ngram_range=(1, 2)).fit(train)
    model = LogisticRegression(C=0.5, max_iter=300).fit(tfidf.transform(train), y_train)
    x = tfidf.transform(held)
    logits, probs = model.decision_function(x), model.predict_proba(x)
    assert (logits.argmax(1) == y_held).mean() > 0.3  # learned well above chance (1/16), errors left to cluster
    root = tmp_path_factory.mktemp("preds")
    classes = np.array([f"intent{i}" for i in range(N_GROUPS * PER_GROUP)])
    np.savez(root / "logits.npz", logits=logits, labels=y_held, classes=classes)
    np.savez(root / "probs.npz", probs=probs, labels=y_held, classes=classes)
    return {"root": root, "logits": logits, "probs": probs}


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def _groups(groups) -> list[list[int]]:
    return [np.asarray(g).tolist() for g in groups]


def test_cluster_predictions_on_logistic_regression_logits_equals_the_estimator(logistic, tmp_path):
    """The issue's goal: `cluster --predictions` on a scikit-learn model's logits gives exactly the
    groups of ConfusionClusterer fitted on the same probabilities (softmax at the default T = 4)."""
    f = logistic["root"] / "logits.npz"
    r = run_cli("cluster", "--predictions", f, "--out", tmp_path / "cl", "--set", "min_mean_size=4", "--quiet")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "cl" / "report.json").read_text())
    k = report["n_groups_search"]["chosen"]  # K chosen from the error capture, as for a generalist
    direct = ConfusionClusterer(k).fit(softmax(logistic["logits"] / 4, axis=1))
    assert _groups(load_clusters(tmp_path / "cl" / "clusters.json").groups) == _groups(direct.groups_)
    assert k == N_GROUPS  # and the groups are the topics
    truth = np.arange(N_GROUPS * PER_GROUP) // PER_GROUP
    assert adjusted_rand_score(truth, direct.labels_) == 1.0
    assert report["error_capture"]["captured"] > 0.8


def test_given_probabilities_at_t1_are_the_estimators_and_at_t_those_of_their_logits(logistic, tmp_path):
    probs = logistic["root"] / "probs.npz"
    at_1 = cluster_predictions(probs, tmp_path / "p1", temperature=1, n_groups=3)
    direct = ConfusionClusterer(3).fit(logistic["probs"])
    assert _groups(at_1.groups) == _groups(direct.groups_)
    np.testing.assert_array_equal(at_1.covariance, direct.covariance_)  # the same Σ, bit for bit
    # probabilities q at T are softmax(log q / T): the same groups as the logits they came from
    from_probs = cluster_predictions(probs, tmp_path / "p4", n_groups=3)
    from_logits = cluster_predictions(logistic["root"] / "logits.npz", tmp_path / "l4", n_groups=3)
    assert _groups(from_probs.groups) == _groups(from_logits.groups)
    np.testing.assert_allclose(from_probs.covariance, from_logits.covariance, rtol=1e-8, atol=1e-12)


def test_soft_predictions_of_probabilities_by_hand():
    """q^(1/T) renormalised, zeros kept, against numpy on a hand-made row."""
    from specens.clustering.predictions import Predictions

    q = np.array([[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.9, 0.1]])
    p = Predictions("x.npz", "probs", q, np.array([0, 2]), ("a", "b", "c", "d"), "f" * 16)
    for t in (0.5, 2.0, 4.0):
        expected = q ** (1 / t) / (q ** (1 / t)).sum(1, keepdims=True)
        np.testing.assert_allclose(p.soft(t), expected, rtol=1e-12)
    assert p.soft(1.0) is q  # T = 1: as given
    logits = Predictions("x.npz", "logits", np.log(q + 1e-30), np.array([0, 2]), ("a", "b", "c", "d"), "f" * 16)
    np.testing.assert_allclose(logits.soft(2.0), p.soft(2.0), atol=1e-12)


def test_the_command_end_to_end_on_a_tiny_file(tmp_path):
    """A 6-class file of two confusable triples: exit 0, the table, the four files; clusters.json
    carries the file's fingerprint and no generalist's, and only a generalist-free reader takes it."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(6), 20)
    logits = rng.normal(0, 0.3, (120, 6))
    logits[np.arange(120), y] += 2.0
    for lo in (0, 3):  # each class's logits also rise for the others of its triple
        rows = (y >= lo) & (y < lo + 3)
        logits[np.ix_(rows, range(lo, lo + 3))] += rng.normal(1.0, 0.8, (rows.sum(), 1))
    f = tmp_path / "p.npz"
    np.savez(f, logits=logits.astype(np.float32), labels=y, classes=list("abcdef"))
    r = run_cli("cluster", "--predictions", f, "--out", tmp_path / "out", "--groups", 2)
    assert r.exit_code == 0, r.output
    assert "2 groups over 6 classes" in r.output and "regime check: specialists unknown" in r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clusters.json",
        "covariance.png",
        "group_sizes.png",
        "report.json",
    ]
    d = json.loads((tmp_path / "out" / "clusters.json").read_text())
    assert d["generalist_fingerprint"] is None and d["predictions_fingerprint"] == fingerprint(f)
    assert d["group_names"] == [["a", "b", "c"], ["d", "e", "f"]]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["predictions"] == {"file": str(f), "fingerprint": fingerprint(f), "given": "logits"}
    assert report["regime"]["likely"] is None and report["transfer_samples"] == 120
    clusters = load_clusters(tmp_path / "out" / "clusters.json")
    assert clusters.predictions_fingerprint == fingerprint(f) and clusters.generalist_fingerprint is None
    with pytest.raises(CheckpointError, match=r"made from a predictions file .* specialists need groups made from"):
        load_clusters(tmp_path / "out" / "clusters.json", "0123456789abcdef", 6)
    assert load_predictions(f).kind == "logits"
    r = run_cli("cluster", "--predictions", f, "--out", tmp_path / "out", "--groups", 2, "--quiet")
    assert r.exit_code == 0, r.output  # its own earlier output is replaced


def test_predictions_or_a_generalist_not_both_nor_neither(tmp_path):
    for args, message in (
        (("--out", "o"), "missing generalist (--generalist) and data (--data); or give predictions (--predictions)"),
        (("--generalist", "g", "--out", "o"), "missing data (--data); or give predictions"),
        (("--predictions", "p.npz", "--data", "d", "--out", "o"), "predictions (--predictions) replaces generalist"),
    ):
        r = run_cli("cluster", *args)
        assert r.exit_code == 1 and message in r.stderr, r.output
    with pytest.raises(ConfigError, match="not both"):
        ClusterConfig(predictions="p.npz", generalist="g", data="d", out="o")
