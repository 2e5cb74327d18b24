"""jobs/compare.py over runs logged to a sqlite store: differing params, eval folding, sort order, CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from jobs import compare as compare_job
from posegpt import tracking
from posegpt.evaluation.compare import CompareConfig, RunTable, compare_runs
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
                mlflow.log_metric("val/text2pose/pa_mpjpe", 100 * value, step=step * 100)
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


def test_bad_inputs(store, tmp_path: Path, capsys, monkeypatch) -> None:
    uri, _ = store
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which the job would read for an empty URI.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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


def _table(rows: list[dict], params: list[str]) -> RunTable:
    columns = ["run_id", "run_name", "job", "status", *params]
    return RunTable(columns, rows, None, False, "exp", "sqlite:///x.db", "7")


def test_compact_table_fits_120_characters_and_computes_the_headline_numbers() -> None:
    params = [f"param.section{i}.setting{i}" for i in range(30)]
    rows = []
    for i, (pa, mean, missing) in enumerate([(128.5, 184.4, 0.1), (186.2, 189.0, 0.0)]):
        row = {
            "run_id": f"{i:032x}",
            "run_name": f"run-{i}-with-a-long-name",
            "job": "train",
            "status": "FINISHED",
        }
        row.update({p: f"value-{i}-{p}" for p in params})
        row.update(
            {
                "eval.text2pose/pa_mpjpe": pa,
                "eval.text2pose/mean_pose/pa_mpjpe": mean,
                "eval.text2pose/missing_pose_rate": missing,
                "eval.image2pose/pa_mpjpe": pa + 50,
                "eval.image2pose/mean_pose/pa_mpjpe": mean,
                "eval.image2pose/missing_pose_rate": 0.3,
                "eval.text2pose/r_t2p_10": 27.0 + i,
                "eval.samples_per_second": 39.1,
            }
        )
        rows.append(row)
    table = _table(rows, params)
    text = table.render_compact(120)
    lines = text.splitlines()
    assert all(len(line) <= 120 for line in lines), max(len(line) for line in lines)
    header = lines[0]
    for label in ("run", "job", "t2p PA (xmean)", "i2p PA (xmean)", "R@10 t2p", "pose %", "samp/s"):
        assert label in header
    first = lines[2]
    assert "run-0-with-a-long-n" in first
    assert f"128.5 ({128.5 / 184.4:.2f})" in first and f"178.5 ({178.5 / 184.4:.2f})" in first
    assert f" {100 * (0.9 + 0.7) / 2:.0f} " in first and "27.0" in first and "39.1" in first
    assert "more differing params not shown" in lines[-1]
    # --all: every column, no matter the width.
    full = table.render()
    assert all(p in full for p in params) and max(len(line) for line in full.splitlines()) > 120


def test_compact_table_shortens_param_names_without_collisions() -> None:
    params = ["param.optimizer.lr", "param.model.lora_r", "param.data.seed", "param.model.seed"]
    rows = [
        {"run_id": "a" * 32, "run_name": "a", "job": "train", "param.optimizer.lr": "0.001", "param.model.lora_r": "8",
         "param.data.seed": "1", "param.model.seed": "2"},
    ]  # fmt: skip
    header = _table(rows, params).render_compact(120).splitlines()[0].split()
    assert {"lr", "lora_r", "data.seed", "model.seed"} <= set(header)


def test_job_prints_the_compact_table_writes_html_and_logs_it(store, tmp_path: Path, capsys) -> None:
    import json
    from urllib.parse import parse_qs, unquote, urlparse

    import mlflow

    uri, _ = store
    rc = compare_job.main(["--experiment", "exp-a", f"output_dir={tmp_path}", f"tracking.tracking_uri={uri}"])
    assert rc == 0
    printed = capsys.readouterr().out.splitlines()
    table_lines = printed[1 : next(i for i, line in enumerate(printed) if line.startswith("CSV: "))]
    assert table_lines[0].split()[:2] == ["run", "job"] and all(len(line) <= 120 for line in table_lines)
    assert "t2p PA (xmean)" in table_lines[0]
    html = (tmp_path / "compare" / "comparison.html").read_text()
    assert all(name in html for name in ("big-lr", "small-lr", "rank8"))
    assert "data:image/png;base64," in html, "the validation curves are drawn"
    assert (tmp_path / "compare" / "validation_curves.png").stat().st_size > 1000
    # The compare view lists the table's runs, in its order, and the experiment.
    view = next(line for line in printed if line.startswith("MLflow compare view"))
    url = view.split(": ", 1)[1]
    assert url.startswith("http://127.0.0.1:5000/#/compare-runs?")
    query = parse_qs(urlparse(url.replace("/#/", "/")).query)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("exp-a")
    assert json.loads(unquote(query["experiments"][0])) == [experiment.experiment_id]
    table = compare_runs(_cfg(uri))
    assert json.loads(unquote(query["runs"][0])) == [r["run_id"] for r in table.rows]
    # Logged to a compare run, which never becomes a row itself.
    logged = next(line for line in printed if line.startswith("logged to MLflow run"))
    run_id = logged.split()[4]
    assert client.get_run(run_id).data.tags[JOB_TAG] == "compare"
    names = {a.path for a in client.list_artifacts(run_id, "comparison")}
    assert {"comparison/comparison.html", "comparison/runs.csv", "comparison/validation_curves.png"} <= names
    assert run_id not in {r["run_id"] for r in table.rows}


def test_all_flag_prints_every_column(store, tmp_path: Path, capsys) -> None:
    uri, _ = store
    rc = compare_job.main(
        [
            "--experiment",
            "exp-a",
            "--all",
            f"output_dir={tmp_path}",
            f"tracking.tracking_uri={uri}",
            "log_artifacts=false",
        ]
    )
    assert rc == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "param.optimizer.lr" in header and "eval.text2pose/pa_mpjpe" in header
