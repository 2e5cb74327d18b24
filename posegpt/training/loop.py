"""``train_loop_per_worker``: what every Ray Train worker runs.

Each worker builds the model, wraps it with ``deepspeed.initialize``, restores
the latest checkpoint when Ray hands one over (a restart or a rerun of the same
run name), streams its share of each task's dataset and composes each batch by the task
ratio. Where rows are decoded and tokenised is ``data.encode_on``: with
``ray_data`` (the default) Ray Data's CPU actors did it ahead of the loop
(``posegpt.training.encoding``) and the worker only pads and stacks the encoded
rows; with ``worker`` the worker collates raw rows itself, inside the step.
Never on the driver. Validation rows are always collated here. Each step logs
the share of its time spent waiting for its batch (``perf/data_wait_share``). A
NaN loss or a row that cannot be encoded stops all ranks at the same step,
naming the rows (``guard``).
Every ``checkpoint.every`` steps the ranks save the model checkpoint plus the
DeepSpeed and data state and report it to Ray Train; rank 0 logs to MLflow.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posegpt.config import from_dict
from posegpt.runtime import DEFAULT_CACHE_DIR, setup_environment
from posegpt.storage import join, write_bytes
from posegpt.training.config import TrainConfig
from posegpt.training.guard import STOP_MARKER, StopReason, any_rank_failed, combine, encode_reasons

log = logging.getLogger(__name__)


@dataclass
class WorkerPayload:
    """What the driver hands every worker (plain data: it crosses process boundaries)."""

    config: dict[str, Any]
    """The TrainConfig as a dict (paths already absolute)."""
    manifest: dict[str, Any]
    """The shard folder's manifest (for MLflow's dataset record)."""
    run_dir: str
    """``<storage_path>/<run_name>``: where the MLflow run id and the stop marker live."""


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    """Ray Train entry point (``train_loop_config`` is ``WorkerPayload`` as a dict)."""
    data = WorkerPayload(**payload)
    cfg = from_dict(TrainConfig, data.config)
    # First, before torch/DeepSpeed are imported: DeepSpeed picks its accelerator at import.
    setup_environment(cfg.cache_dir or DEFAULT_CACHE_DIR)
    Worker(cfg, data).run()


class Worker:
    """One rank's training state and steps."""

    def __init__(self, cfg: TrainConfig, payload: WorkerPayload) -> None:
        import ray.train
        import torch

        from posegpt.training.state import StatusFile

        self.started_at = time.time()
        self.cfg = cfg
        self.payload = payload
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.cache_dir = Path(cfg.cache_dir or DEFAULT_CACHE_DIR)
        if cfg.scaling.torch_threads > 0:
            torch.set_num_threads(cfg.scaling.torch_threads)
        if cfg.scaling.use_gpu:
            import ray.train.torch

            self.device = ray.train.torch.get_device()
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.status = StatusFile(cfg.logging.status_dir, self.rank)
        self.status.update(step=None, phase="starting")

    # -- set-up ---------------------------------------------------------------------------

    def build_engine(self) -> None:
        import deepspeed
        import torch
        import torch.distributed as dist

        from posegpt.model.collate import Collator
        from posegpt.model.posegpt_model import build_model
        from posegpt.training.deepspeed_config import deepspeed_config
        from posegpt.training.optimizer_groups import parameter_groups

        torch.manual_seed(self.cfg.seed)
        # One process per node fetches or builds the base model; the others then find it in the cache.
        first = self.local_rank == 0
        if not first and dist.is_initialized():
            dist.barrier()
        model = build_model(
            self.cfg.model, cache_dir=self.cache_dir, storage=self.cfg.storage, device=self.device
        )
        if first and dist.is_initialized():
            dist.barrier()
        bf16_ok = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.ds_config = deepspeed_config(
            self.cfg, self.world, "cuda" if self.device.type == "cuda" else "cpu", bf16_ok
        )
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=parameter_groups(model, self.cfg.optimizer), config=self.ds_config
        )
        # DeepSpeed's warm-up schedulers start at iteration -1, i.e. lr 0 for the first update;
        # one step moves them to iteration 0 so the first update uses warmup_start_ratio × lr.
        # A restored checkpoint overwrites the iteration with its own.
        self.scheduler.step()
        self.collate = Collator.for_model(model)
        if self.cfg.data.encode_on == "ray_data":
            from posegpt.training.encoding import check_same_encoding, encoding_collator, stack_records

            # The actors rebuilt this collator without the model: a difference would train on wrong ids.
            check_same_encoding(
                self.collate, encoding_collator(self.cfg.model, self.cache_dir, self.cfg.storage)
            )
            self.make_batch = lambda rows: stack_records(self.collate, rows)
        else:
            self.make_batch = self.collate

    def load_engine_state(self, folder: Path, saved_world: int) -> None:
        """DeepSpeed state of a checkpoint: trainable weights, optimizer, LR schedule.

        ZeRO partitions the optimizer state by rank and cannot re-partition it for
        another number of workers: then only the weights and the schedule are restored
        and the Adam moments start again (logged as a warning).
        """
        from posegpt.training.state import DEEPSPEED_DIR, DEEPSPEED_TAG

        same_world = saved_world == self.world
        if not same_world:
            log.warning(
                "checkpoint %s was written by %d workers, this run has %d: restoring weights and "
                "learning-rate schedule, the optimizer state starts afresh",
                folder,
                saved_world,
                self.world,
            )
        load_path, _ = self.engine.load_checkpoint(
            str(folder / DEEPSPEED_DIR),
            tag=DEEPSPEED_TAG,
            load_module_strict=False,
            load_optimizer_states=same_world,
            load_lr_scheduler_states=True,
        )
        if load_path is None:
            raise FileNotFoundError(f"checkpoint {folder} holds no DeepSpeed state under {DEEPSPEED_DIR}/")

    def open_sources(self, positions: dict[str, Any]) -> None:
        import ray.train

        from posegpt.training.mixing import CyclingSource, TaskMixer, rows_of_batches

        counts = self.cfg.task_counts()
        sources = {}
        for task in self.cfg.active_tasks():
            shard = ray.train.get_dataset_shard(task)
            rows_per_read = max(counts[task] * self.cfg.engine.grad_accumulation, 8)

            def open_epoch(shard: Any = shard, n: int = rows_per_read) -> Iterator[dict[str, Any]]:
                return rows_of_batches(
                    shard.iter_batches(
                        batch_size=n,
                        batch_format="pyarrow",
                        local_shuffle_buffer_size=self.cfg.data.shuffle_buffer or None,
                        local_shuffle_seed=self.cfg.seed + self.rank
                        if self.cfg.data.shuffle_buffer
                        else None,
                        prefetch_batches=1,
                    )
                )

            sources[task] = CyclingSource(task, open_epoch, positions.get(task))
        self.mixer = TaskMixer(sources, counts)

    def open_validation(self) -> None:
        from posegpt.body.model import BodyModel
        from posegpt.training.shards import first_poses, read_rows
        from posegpt.training.validation import ValidationSlice, rank_share, training_mean_pose

        self.val_slices: list[ValidationSlice] = []
        self.body = None
        v = self.cfg.validation
        if v.every <= 0 or v.samples <= 0:
            return
        root, storage = self.cfg.data.shard_root, self.cfg.storage
        for task in v.tasks:
            rows = read_rows(root, task, self.cfg.data.val_split, v.samples, storage)
            mean = None
            if self.rank == 0:
                train = read_rows(
                    root, task, self.cfg.data.train_split, v.mean_pose_rows, storage, columns=["poses"]
                )
                mean = training_mean_pose(first_poses(train))
            self.val_slices.append(ValidationSlice(task, rank_share(rows, self.rank, self.world), mean))
        if self.rank == 0:
            self.body = BodyModel.from_config(self.cfg.body, self.cache_dir)

    # -- steps ----------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, float] | list[StopReason]:
        """One optimizer step (``grad_accumulation`` micro-batches); metrics, or why to stop."""
        import torch

        t0 = time.perf_counter()
        # loss, text, pose, micro-batches, samples, tokens, seconds waiting for the batch
        sums = torch.zeros(7, dtype=torch.float64)
        lr = float(self.engine.get_lr()[0])
        for _ in range(self.cfg.engine.grad_accumulation):
            # Data wait: from asking for rows to holding the batch's tensors (with encode_on=worker
            # that includes decoding and tokenising, which is what the Ray Data stage takes away).
            t_data = time.perf_counter()
            rows = self.mixer.next_batch()
            ids = [str(r.get("sample_id")) for r in rows]
            batch, reason = None, None
            try:
                batch = self.make_batch(rows)
            except Exception as exc:  # any collate failure is a problem of these rows
                reason = StopReason("bad_batch", step, self.rank, f"{type(exc).__name__}: {exc}", ids)
            waited = time.perf_counter() - t_data
            stop = any_rank_failed(reason, self.world)
            if stop:
                return stop
            assert batch is not None
            out = self.engine(batch)
            loss = out.loss
            if not bool(torch.isfinite(loss.detach()).all()):
                message = (
                    f"non-finite loss {float(loss):.6g} (text {float(out.text_loss):.6g}, "
                    f"pose {float(out.pose_loss):.6g})"
                )
                reason = StopReason("nonfinite_loss", step, self.rank, message, ids)
            stop = any_rank_failed(reason, self.world)
            if stop:
                return stop
            self.engine.backward(loss)
            self.engine.step()
            sums += torch.tensor(
                [
                    float(loss.detach()),
                    float(out.text_loss.detach()),
                    float(out.pose_loss.detach()),
                    1.0,
                    float(len(rows)),
                    float(batch["attention_mask"].sum()),
                    waited,
                ],
                dtype=torch.float64,
            )
        totals = self.all_reduce(sums) if self.world > 1 else sums
        self.state.samples_seen += int(totals[4])
        elapsed = time.perf_counter() - t0
        n = max(float(totals[3]), 1.0)
        data_wait = float(totals[6]) / self.world  # the ranks' mean
        extra = {}
        if self.device.type == "cuda":
            extra["gpu/peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return {
            **extra,
            "train/loss": float(totals[0]) / n,
            "train/text_loss": float(totals[1]) / n,
            "train/pose_loss": float(totals[2]) / n,
            "train/lr": lr,
            "train/samples_per_s": float(totals[4]) / elapsed,
            "train/tokens_per_s": float(totals[5]) / elapsed,
            "train/step_time_s": elapsed,
            "perf/data_wait_s": data_wait,
            "perf/data_wait_share": data_wait / elapsed,
        }

    def shared_start_token(self) -> int:
        """Rank 0's clock (seconds) at this start, the same on every rank."""
        import torch.distributed as dist

        token = [int(time.time())]
        if self.world > 1:
            dist.broadcast_object_list(token, src=0)
        return int(token[0])

    def parameter_counts(self) -> dict[str, float]:
        """Model size for throughput and MFU figures (ZeRO 3 keeps the full size in ``ds_numel``)."""

        def numel(p: Any) -> int:
            return int(getattr(p, "ds_numel", p.numel()))

        module = self.engine.module
        vision = module.llava.model.vision_tower
        return {
            "model/params_total": float(sum(numel(p) for p in module.parameters())),
            "model/params_trainable": float(sum(numel(p) for p in module.parameters() if p.requires_grad)),
            "model/params_vision": float(sum(numel(p) for p in vision.parameters())),
        }

    def all_reduce(self, values: Any) -> Any:
        """Sum of ``values`` over all ranks (on the GPU for NCCL, which reduces only CUDA tensors)."""
        import torch.distributed as dist

        reduced = values.to(self.device) if self.device.type == "cuda" else values.clone()
        dist.all_reduce(reduced)
        return reduced.cpu()

    def validate(self) -> dict[str, float]:
        """Pose error on the held-out slice (all ranks run; rank 0 gets the metrics)."""
        import numpy as np
        import torch.distributed as dist

        from posegpt.training.validation import predict_poses, score

        if not self.val_slices:
            return {}
        self.engine.eval()
        metrics: dict[str, float] = {}
        try:
            for vs in self.val_slices:
                pred, gt, _ = predict_poses(
                    self.engine, self.collate, vs.rows, self.cfg.validation.batch_size
                )
                parts: list[Any] = [None] * self.world
                if self.world > 1:
                    dist.all_gather_object(parts, (pred, gt))
                else:
                    parts = [(pred, gt)]
                if self.rank == 0:
                    all_pred = np.concatenate([p[0] for p in parts])
                    all_gt = np.concatenate([p[1] for p in parts])
                    metrics.update(score(all_pred, all_gt, vs.mean_pose, self.body, f"val/{vs.task}"))
        finally:
            self.engine.train()
        return metrics

    # -- checkpoints ----------------------------------------------------------------------

    def save(self, step: int, metrics: dict[str, float], final: bool) -> None:
        """Write this rank's part of the checkpoint and report it (a barrier over all ranks)."""
        import ray.train

        from posegpt.model.checkpoint import save_checkpoint
        from posegpt.training.state import (
            DEEPSPEED_DIR,
            DEEPSPEED_TAG,
            write_data_state,
            write_train_state,
        )

        t0 = time.perf_counter()
        self.state.step = step
        with tempfile.TemporaryDirectory(prefix=f"posegpt-ckpt-r{self.rank}-") as tmp:
            folder = Path(tmp)
            self.engine.save_checkpoint(
                str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True
            )
            write_data_state(folder, self.rank, self.mixer.state())
            with self.gathered_trainables():
                if self.rank == 0:
                    save_checkpoint(self.engine.module, folder)
                    write_train_state(folder, self.state)
            report = {"step": step, "samples_seen": self.state.samples_seen, **metrics}
            # The same name on every rank (their folders merge) and unique per start: a restart can
            # redo a step whose checkpoint a dead worker had uploaded but Ray had not registered.
            name = f"checkpoint_step{step:07d}_start{len(self.state.starts)}_{self.start_token}"
            ray.train.report(
                report, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name
            )
            save_s = time.perf_counter() - t0
            self.status.update(checkpoint_save_s=save_s, last_checkpoint_step=step)
            if self.rank == 0:
                self.logger.log_metrics({"time/checkpoint_save_s": save_s}, step)
                if final:
                    self.finish_model(folder, join(self.payload.run_dir, name))

    @contextmanager
    def gathered_trainables(self) -> Iterator[None]:
        """Under ZeRO 3 the trainable weights live in shards: gather them while rank 0 saves."""
        if self.cfg.engine.zero_stage < 3:
            yield
            return
        import deepspeed

        params = [p for p in self.engine.module.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield

    def finish_model(self, folder: Path, checkpoint_uri: str) -> None:
        """Rank 0, after the last checkpoint: register the model version and draw the curves."""
        from posegpt.model.checkpoint import (
            ADAPTER_DIR,
            CONFIG_FILE,
            OPTIONAL_FILES,
            POSE_HEAD_FILE,
            TOKENIZER_DIR,
        )

        with tempfile.TemporaryDirectory(prefix="posegpt-final-") as tmp:
            model_dir = Path(tmp) / "checkpoint"
            model_dir.mkdir()
            for name in (ADAPTER_DIR, TOKENIZER_DIR):
                shutil.copytree(folder / name, model_dir / name)
            for name in (POSE_HEAD_FILE, CONFIG_FILE):
                shutil.copy2(folder / name, model_dir / name)
            # The pose encoder's projector and the pose input encoder: only some models have them.
            for name in OPTIONAL_FILES:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, model_dir / name)
            version = self.logger.log_final_model(model_dir, checkpoint_uri)
        if version is not None:
            self.logger.set_tags({"posegpt.registered_version": version})
        self.logger.log_plots()

    def stop(self, reasons: list[StopReason]) -> None:
        """Leave the loop on every rank; rank 0 records why for the driver."""
        message = combine(reasons)
        self.status.update(phase="stopped", stop=message)
        if self.rank == 0:
            write_bytes(join(self.payload.run_dir, STOP_MARKER), encode_reasons(reasons), self.cfg.storage)
            self.logger.set_tags({"posegpt.stopped": message[:5000]})
            self.logger.end(status="FAILED")

    # -- the run --------------------------------------------------------------------------

    def run(self) -> None:
        import ray.train

        from posegpt.training.mlflow_logging import RunLogger
        from posegpt.training.state import TrainState, read_data_state

        max_steps = self.cfg.schedule.max_steps
        checkpoint = ray.train.get_checkpoint()
        self.restore_s: float | None = None
        with ExitStack() as stack:
            t0 = time.perf_counter()
            folder = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
            download_s = time.perf_counter() - t0
            self.state = TrainState.read(folder) if folder else TrainState()
            start = self.state.step
            wait_for_data = None
            if start < max_steps:
                # The data streams start (seconds each) while the model is built.
                self.open_sources(read_data_state(folder, self.rank) if folder else {})
                wait_for_data = self.mixer.warm_up()
            self.build_engine()
            if folder is not None:
                t0 = time.perf_counter()
                saved_world = self.state.starts[-1]["world_size"] if self.state.starts else self.world
                self.load_engine_state(folder, saved_world)
                self.restore_s = download_s + time.perf_counter() - t0
        self.start_token = self.shared_start_token()
        self.state.starts.append({"start_step": start, "world_size": self.world, "time": self.start_token})
        self.logger = RunLogger(self.cfg, self.payload.run_dir, self.cfg.storage_path)
        if self.rank == 0:
            self.state.mlflow_run_id = self.logger.start(
                self.state.mlflow_run_id, self.payload.manifest, self.ds_config
            )
            self.logger.log_metrics(
                {"time/worker_start_to_engine_s": time.time() - self.started_at, **self.parameter_counts()},
                start,
            )
            if self.restore_s is not None:
                self.logger.log_metrics({"time/checkpoint_restore_s": self.restore_s}, start)
        self.status.update(
            phase="training", step=start, attempt=len(self.state.starts), restore_s=self.restore_s
        )
        if wait_for_data is None:
            self.logger.end()
            return
        self.open_validation()
        wait_for_data()
        if start == 0:
            self.log(self.validate(), 0)
        try:
            for step in range(start + 1, max_steps + 1):
                result = self.train_step(step)
                if isinstance(result, list):
                    self.stop(result)
                    return
                if step == start + 1:
                    self.status.update(first_step_done_at=time.time())
                self.status.update(step=step)
                metrics = dict(result)
                final = step == max_steps
                every = self.cfg.validation.every
                if every > 0 and (step % every == 0 or final):
                    metrics.update(self.validate())
                if step % self.cfg.logging.every == 0 or final or any(k.startswith("val/") for k in metrics):
                    self.log(metrics, step)
                if step % self.cfg.checkpoint.every == 0 or final:
                    self.save(step, metrics, final)
        except BaseException:
            if self.rank == 0:
                self.logger.end(status="FAILED")
            raise
        self.status.update(phase="done")
        if self.rank == 0:
            self.logger.end()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.rank == 0:
            self.logger.log_metrics(metrics, step)
