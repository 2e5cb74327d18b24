"""The text–pose retrieval model: frozen encoder, training, held-out recall, save/load, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from posegpt.retrieval import (
    META_FILE,
    RECALL_KS,
    RetrievalConfig,
    TextPoseRetrieval,
    chance_recall,
    recalls_from_similarity,
)
from posegpt.retrieval_text import SentenceEncoder, TextFeatureCache
from tests.fixtures.evaluation import TEXT_CACHE


def _ranks_recall(sim: np.ndarray, k: int) -> float:
    """Independent recall: position of the diagonal element in each row sorted descending."""
    hits = 0
    for i, row in enumerate(sim):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        better = [j for j in order if row[j] > row[i]]
        hits += len(better) < k
    return 100.0 * hits / len(sim)


@pytest.fixture(scope="module")
def model(trained_retrieval: Path) -> TextPoseRetrieval:
    return TextPoseRetrieval.load(trained_retrieval, cache_dir=TEXT_CACHE)


# The first 8 dimensions of ``SentenceTransformer(all-MiniLM-L6-v2).encode(..., normalize_embeddings=True)``
# (sentence-transformers 6.2.0, the package's own ``load_model()``), recorded once: importing
# sentence-transformers costs ~15 s, too much for every run.
REFERENCE = {
    "the left knee is bent": [-0.054055, 0.088707, -0.007122, 0.018424, -0.046588, 0.020413, -0.034091, 0.127985],
    "A person raises both arms above the head.": [
        -0.029213, 0.071163, 0.007799, -0.041779, -0.060594, 0.032705, 0.079073, 0.026171,
    ],
}  # fmt: skip


def test_sentence_encoder_matches_sentence_transformers() -> None:
    """Mean pooling + normalisation reproduce the packaged model's own pipeline, whatever the batch."""
    encoder = SentenceEncoder()
    texts = list(REFERENCE)
    ours = encoder.encode(texts)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours[:, :8], np.array(list(REFERENCE.values())), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Padding in a batch with a longer sentence changes nothing.
    alone = encoder.encode([texts[0]])
    padded = encoder.encode([texts[0], "a much longer sentence " * 10])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_recalls_from_similarity_independent() -> None:
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(30, 30))
    rec = recalls_from_similarity(sim, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert rec.text_to_pose[k] == pytest.approx(_ranks_recall(sim, k))
        assert rec.pose_to_text[k] == pytest.approx(_ranks_recall(sim.T, k))
    # Ties are broken at random in expectation: identical poses for every text give chance, not 100%.
    tied = recalls_from_similarity(np.ones((10, 10)), ks=(1, 5, 10))
    assert tied.text_to_pose == {1: pytest.approx(10.0), 5: pytest.approx(50.0), 10: pytest.approx(100.0)}
    half = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    # Row 0: one tie (expected hit 1/2 at K=1); row 1: beaten once (miss at K=1); row 2: clear hit.
    assert recalls_from_similarity(half, ks=(1,)).text_to_pose[1] == pytest.approx(100.0 * 1.5 / 3)
    perfect = recalls_from_similarity(np.eye(7) + 0.01 * rng.normal(size=(7, 7)), ks=(1,))
    assert perfect.text_to_pose[1] == 100.0 and perfect.pose_to_text[1] == 100.0
    with pytest.raises(ValueError, match="square"):
        recalls_from_similarity(np.zeros((3, 4)))


def test_equal_inputs_tie_exactly(model: TextPoseRetrieval, toy_retrieval_data) -> None:
    """One pose answered to every text ties exactly wherever it sits in the batch: chance, not noise."""
    poses, captions = toy_retrieval_data["test"]
    n = 37  # not a multiple of any kernel's tile, so rows fall in different tiles
    repeated = np.repeat(poses[:1], n, axis=0)
    sim = model.similarity(list(captions[:n]), repeated)
    assert (sim == sim[:, :1]).all()
    rec = model.recalls(list(captions[:n]), repeated, ks=(5,))
    assert rec.text_to_pose[5] == pytest.approx(100 * 5 / n)
    # Otherwise it is the plain product of the embeddings (duplicates gathered, not dropped).
    mixed = np.concatenate([poses[:n], poses[:3]])
    texts = [*captions[:n], *captions[:3]]
    expected = model.embed_texts(texts) @ model.embed_poses(mixed).T
    np.testing.assert_allclose(model.similarity(texts, mixed), expected, atol=1e-5)


def test_beats_chance_on_held_out(model: TextPoseRetrieval, toy_retrieval_data) -> None:
    poses, captions = toy_retrieval_data["test"]
    rec = model.recalls(captions, poses)
    assert rec.gallery_size == len(poses)
    for k in RECALL_KS:
        chance = chance_recall(k, len(poses))
        # Wide margin: at least 8× chance and above one half at K=10 in both directions.
        assert rec.text_to_pose[k] >= min(100.0, 8 * chance), rec
        assert rec.pose_to_text[k] >= min(100.0, 8 * chance), rec
    assert rec.text_to_pose[10] > 50 and rec.pose_to_text[10] > 50
    # Shuffled poses (a generator that ignores the text) fall back to chance.
    shuffled = poses[np.random.default_rng(3).permutation(len(poses))]
    bad = model.recalls(captions, shuffled)
    assert bad.text_to_pose[10] < 3 * chance_recall(10, len(poses))
    metrics = rec.as_metrics()
    assert set(metrics) == {f"r_{d}_{k}" for d in ("t2p", "p2t") for k in RECALL_KS} | {"r_mean"}


def test_save_load_roundtrip(
    model: TextPoseRetrieval, trained_retrieval: Path, toy_retrieval_data, tmp_path: Path
) -> None:
    poses, captions = toy_retrieval_data["test"]
    again = TextPoseRetrieval.load(model.save(tmp_path / "copy"), cache_dir=TEXT_CACHE)
    np.testing.assert_array_equal(again.embed_poses(poses[:10]), model.embed_poses(poses[:10]))
    np.testing.assert_array_equal(again.embed_texts(captions[:10]), model.embed_texts(captions[:10]))
    assert again.summary is not None and again.summary.pairs == 800

    meta = yaml.safe_load((tmp_path / "copy" / META_FILE).read_text())
    meta["text_encoder"]["fingerprint"] = "0" * 16
    (tmp_path / "copy" / META_FILE).write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match=r"different text encoder|fingerprint"):
        TextPoseRetrieval.load(tmp_path / "copy")
    with pytest.raises(FileNotFoundError, match=r"retrieval\.safetensors"):
        TextPoseRetrieval.load(tmp_path)


def test_text_feature_cache_persists(model: TextPoseRetrieval, tmp_path: Path) -> None:
    cache = TextFeatureCache(model.encoder, tmp_path)
    texts = ["a person kneels", "a person kneels", "arms crossed"]
    feats = cache.features(texts)
    assert len(cache) == 2
    np.testing.assert_array_equal(feats[0], feats[1])

    class Refusing:
        dim = model.encoder.dim
        fingerprint = model.encoder.fingerprint

        def encode(self, texts):  # pragma: no cover - must not be called
            raise AssertionError(f"encoder called for {texts}")

    reloaded = TextFeatureCache(Refusing(), tmp_path)  # type: ignore[arg-type]
    np.testing.assert_array_equal(reloaded.features(texts), feats)


def test_bad_input(model: TextPoseRetrieval, toy_retrieval_data) -> None:
    poses, captions = toy_retrieval_data["test"]
    fresh = TextPoseRetrieval(RetrievalConfig(epochs=1), encoder=model.encoder, cache_dir=TEXT_CACHE)
    with pytest.raises(ValueError, match="3 captions but 4 poses"):
        fresh.fit(poses[:4], captions[:3])
    with pytest.raises(ValueError, match="row 1 is empty"):
        fresh.fit(poses[:3], [captions[0], " ", captions[2]])
    bad = poses[:3].copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="row 2 holds NaN"):
        fresh.fit(bad, captions[:3])
    with pytest.raises(ValueError, match=r"\(N, 72\)"):
        model.embed_poses(poses[:, :69])
    with pytest.raises(ValueError, match="row i"):
        model.recalls(captions[:5], poses[:6])
