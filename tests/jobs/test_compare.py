"""jobs/compare.py over runs logged to a sqlite store: differing params, eval folding, sort order, CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from jobs import compare as compare_job
from posegpt import tracking
from posegpt.evaluation.compare import CompareConfig, compare_runs
from posegpt.evaluation.tracking_links import EVAL_JOB, JOB_TAG, TRAIN_RUN_TAG
from posegpt.tracking import TrackingConfig


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """Three training runs (lr and lora_r vary, seed does not), two evaluated, one evaluated twice."""
    import mlflow

    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracking.configure(TrackingConfig(tracking_uri=uri, experiment="exp-a"), folder)
    ids: dict[str, str] = {}
    runs = {
        "small-lr": (1e-4, 64, 0.9, 300.0),
        "big-lr": (1e-3, 64, 0.5, 200.0),
        "rank8": (1e-3, 8, 0.7, None),
    }
    for name, (lr, rank, loss, eval_pa) in runs.items():
        with mlflow.start_run(run_name=name, tags={JOB_TAG: "train"}) as run:
            mlflow.log_params({"optimizer.lr": lr, "model.lora_r": rank, "seed": 0})
            for step, value in enumerate([loss + 1.0, loss]):
                mlflow.log_metric("loss", value, step=step)
            ids[name] = run.info.run_id
        if eval_pa is not None:
            if name == "big-lr":
                # An older evaluation of the same run: the newest one wins.
                with mlflow.start_run(run_name="old-eval", parent_run_id=ids[name], tags={JOB_TAG: EVAL_JOB}):
                    mlflow.log_metrics({"text2pose/pa_mpjpe": 999.0})
            with mlflow.start_run(run_name=f"eval-{name}", parent_run_id=ids[name], tags={JOB_TAG: EVAL_JOB}):
                mlflow.log_metrics({"text2pose/pa_mpjpe": eval_pa, "text2pose/r_t2p_10": 400.0 / eval_pa})
    # An evaluation whose training run lives in another store: linked by tag, so it keeps a row of its own.
    with mlflow.start_run(run_name="orphan-eval", tags={JOB_TAG: EVAL_JOB, TRAIN_RUN_TAG: "f" * 32}) as run:
        mlflow.log_metrics({"text2pose/pa_mpjpe": 250.0})
        ids["orphan"] = run.info.run_id
    tracking.configure(TrackingConfig(tracking_uri=uri, experiment="exp-b"), folder)
    with mlflow.start_run(run_name="other"):
        mlflow.log_metric("loss", 0.1)
    return uri, ids


def _cfg(uri: str, **kw) -> CompareConfig:
    return CompareConfig(
        tracking=TrackingConfig(tracking_uri=uri, experiment=kw.pop("experiment", "exp-a")), **kw
    )


def test_table(store) -> None:
    uri, ids = store
    table = compare_runs(_cfg(uri))
    names = [r["run_name"] for r in table.rows]
    # Sorted by the evaluation's PA-MPJPE, ascending; runs without it last.
    assert table.sort_column == "eval.text2pose/pa_mpjpe" and not table.descending
    assert names == ["big-lr", "orphan-eval", "small-lr", "rank8"]
    big = table.rows[0]
    assert big["eval.text2pose/pa_mpjpe"] == 200.0  # the newest evaluation, not the 999 one
    assert big["loss"] == 0.5  # final value of the training metric
    # Only params that differ are shown.
    assert "param.optimizer.lr" in table.columns and "param.model.lora_r" in table.columns
    assert "param.seed" not in table.columns
    assert table.rows[-1]["run_id"] == ids["rank8"] and "eval.text2pose/pa_mpjpe" not in table.rows[-1]

    recall = compare_runs(_cfg(uri, metric="r_t2p_10"))
    assert recall.descending and [r["run_name"] for r in recall.rows][:2] == ["big-lr", "small-lr"]
    trains = compare_runs(_cfg(uri, jobs=["train"], always_params=["seed"]))
    assert len(trains.rows) == 3 and "param.seed" in trains.columns


def test_job_writes_csv(store, tmp_path: Path, capsys) -> None:
    uri, _ = store
    out = tmp_path / "runs.csv"
    rc = compare_job.main(
        ["--experiment", "exp-a", "--metric", "loss", "--csv", str(out), f"tracking.tracking_uri={uri}"]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "sorted by loss (ascending)" in printed and "big-lr" in printed
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run_name"] for r in rows] == ["big-lr", "rank8", "small-lr", "orphan-eval"]
    assert float(rows[0]["loss"]) == 0.5 and rows[0]["param.optimizer.lr"] == "0.001"


def test_bad_inputs(store, tmp_path: Path, capsys) -> None:
    uri, _ = store
    with pytest.raises(ValueError, match=r"experiment 'nope' not found .* experiments there: .*'exp-a'"):
        compare_runs(_cfg(uri, experiment="nope"))
    with pytest.raises(FileNotFoundError, match="no MLflow tracking store at"):
        compare_runs(CompareConfig(output_dir=str(tmp_path / "empty")))
    assert not (tmp_path / "empty" / "mlflow.db").exists()  # reading must not create a store
    rc = compare_job.main(
        ["--config", "configs/compare/default.yaml", f"output_dir={tmp_path}", "tracking.tracking_uri="]
    )
    assert rc == 1 and "no MLflow tracking store" in capsys.readouterr().err
    unsorted = compare_runs(_cfg(uri, metric="does_not_exist"))
    assert unsorted.sort_column is None and len(unsorted.rows) == 4
