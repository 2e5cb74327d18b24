"""Promotion: an evaluation moves the model's alias to the version it scored only when that version is better."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt.evaluation.tracking_links import (
    SCORE_TAG_PREFIX,
    PromotionConfig,
    promote_if_better,
)

METRIC = "text2pose/pa_mpjpe"


@pytest.fixture
def registry(tmp_path: Path) -> tuple[str, object]:
    """A sqlite store with registered model ``posegpt-promo`` and six versions (no artifacts needed)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("posegpt-promo")
    for _ in range(6):
        client.create_model_version("posegpt-promo", source=str(tmp_path / "model"))
    return uri, client


def _holder(client, alias: str = "champion") -> str:
    return str(client.get_model_version_by_alias("posegpt-promo", alias).version)


def test_alias_moves_only_to_a_better_version(registry) -> None:
    uri, client = registry
    cfg = PromotionConfig(alias="champion", metric=METRIC)

    def evaluate(version: int, score: float):
        return promote_if_better(
            cfg, f"models:/posegpt-promo/{version}", {METRIC: score}, uri, f"run{version}"
        )

    first = evaluate(1, 150.0)
    assert first.promoted and first.previous is None and _holder(client) == "1"
    worse = evaluate(2, 160.0)
    assert not worse.promoted and "does not beat" in worse.reason and _holder(client) == "1"
    better = evaluate(3, 140.0)
    assert better.promoted and better.previous == "1" and _holder(client) == "3"
    assert "was version 1 (150)" in better.reason
    tie = evaluate(4, 140.0)
    assert not tie.promoted and _holder(client) == "3", "a tie keeps the holder"
    again = evaluate(3, 139.0)
    assert not again.promoted and "already holds" in again.reason
    # Every evaluated version carries its score, the holder's included.
    v2 = client.get_model_version("posegpt-promo", "2")
    assert float(v2.tags[SCORE_TAG_PREFIX + METRIC]) == 160.0 and v2.tags["posegpt.eval_run_id"] == "run2"
    assert float(client.get_model_version("posegpt-promo", "3").tags[SCORE_TAG_PREFIX + METRIC]) == 139.0


def test_higher_is_better_metrics_and_a_hand_set_alias(registry) -> None:
    uri, client = registry
    recall = PromotionConfig(alias="best-recall", metric="text2pose/r_t2p_10", higher_is_better=True)
    assert promote_if_better(recall, "models:/posegpt-promo/1", {recall.metric: 20.0}, uri).promoted
    assert not promote_if_better(recall, "models:/posegpt-promo/2", {recall.metric: 10.0}, uri).promoted
    assert promote_if_better(recall, "models:/posegpt-promo/3", {recall.metric: 30.0}, uri).promoted
    assert _holder(client, "best-recall") == "3"
    # An alias set by hand carries no score: the first scored version replaces it.
    client.set_registered_model_alias("posegpt-promo", "champion", "5")
    decision = promote_if_better(
        PromotionConfig(metric=METRIC), "models:/posegpt-promo/6", {METRIC: 200.0}, uri
    )
    assert decision.promoted and "unscored" in decision.reason and _holder(client) == "6"


def test_no_promotion_without_a_version_a_metric_or_an_alias(registry) -> None:
    uri, client = registry
    cfg = PromotionConfig(metric=METRIC)
    assert not promote_if_better(cfg, "/some/checkpoint", {METRIC: 1.0}, uri).promoted
    missing = promote_if_better(cfg, "models:/posegpt-promo/1", {"text2pose/mpjpe": 1.0}, uri)
    assert not missing.promoted and METRIC in missing.reason
    nan = promote_if_better(cfg, "models:/posegpt-promo/1", {METRIC: float("nan")}, uri)
    assert not nan.promoted
    off = promote_if_better(PromotionConfig(alias=""), "models:/posegpt-promo/1", {METRIC: 1.0}, uri)
    assert not off.promoted
    assert not client.get_registered_model("posegpt-promo").aliases
