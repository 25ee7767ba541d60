"""Evaluations during a run: the test metrics logged and printed, the valid split that early stopping
decides on (a new best is checkpointed into RUN/best/), and the best checkpoint's test metrics."""
import time

from engine.evaluate import evaluate
from engine.run.checkpoint import load_checkpoint, save_checkpoint
from engine.run.early_stop import PENDING, best_dir
from engine.run.phases import kill_point
from engine.run.report import metrics_text, write_record


def evaluate_now(job, epoch: int) -> dict:
    """Test metrics of the current parameters, logged and printed. -> the record."""
    t0 = time.perf_counter()
    result = job.process.evaluate(job.model, job.params, job.test, job.kernels)
    kill_point("evaluating", job.global_step)
    record = {"type": "eval", "epoch": epoch + 1, "step": job.global_step, **result,
              "eval_seconds": time.perf_counter() - t0, "elapsed": time.perf_counter() - job.started,
              "samples_per_s": job.samples_per_s}
    bayes = job.bayes
    if bayes:
        record["bayes_auc"], record["bayes_logloss"] = bayes.get("test_auc"), bayes.get("test_logloss")
    if job.early is not None:
        observe_valid(job, epoch, record)
    if job.process.is_root:
        write_record(job, record)
    kill_point("eval", job.global_step)
    beside = f"  (Bayes-optimal AUC {bayes['test_auc']:.4f}, logloss {bayes['test_logloss']:.4f})" if bayes else ""
    print(f"[eval] epoch {epoch + 1} step {job.global_step}: {early_stop_text(job, record)}"
          f"{metrics_text(result)}{beside}; "
          f"{record['samples_per_s']:,.0f} samples/s, {record['elapsed']:.0f}s elapsed", flush=True)
    if job.stopped:
        print(f"[early stop] {job.cfg.early_stop} evaluations without a better valid AUC; the best was "
              f"{job.early.best_valid_auc:.5f} at step {job.early.best_step}", flush=True)
    return record


def early_stop_text(job, record: dict) -> str:
    """--early-stop: the valid AUC it decides on, the best so far and the patience used, before the test metrics."""
    if job.early is None:
        return ""
    valid = record.get("valid_auc")
    return (f"valid AUC {'undefined' if valid is None else f'{valid:.5f}'} (best {job.early.best_valid_auc:.5f} "
            f"at step {job.early.best_step}, {job.early.since_best} of {job.early.patience} without a better one); ")


def observe_valid(job, epoch: int, record: dict) -> None:
    """--early-stop: valid metrics into `record`; a new best is checkpointed into RUN/best/pending, made
    RUN/best/checkpoint by the run's next checkpoint (engine/run/early_stop.py)."""
    valid = evaluate(job.model, job.params, job.valid, job.kernels)
    record.update({f"valid_{k}": v for k, v in valid.items()})
    if job.early.observe(valid["auc"], job.global_step):
        position = {"epoch": epoch, "step_in_epoch": 0, "global_step": job.global_step}
        save_checkpoint(best_dir(job.out), job.params, job.state, position, job.rng.bit_generator.state,
                        job.kernels.to_host, name=PENDING)
        kill_point("best", job.global_step)
    job.early.save(job.out)
    job.stopped = job.early.should_stop


def best_test_metrics(job) -> dict:
    """Test metrics of the checkpoint in RUN/best/ (the best valid AUC), for final_metrics.json."""
    params, _, info = load_checkpoint(job.out / "best", job.kernels.xp.asarray)
    result = evaluate(job.model, params, job.test, job.kernels)
    record = {"type": "best", "step": info["global_step"], "valid_auc": job.early.best_valid_auc, **result}
    if job.bayes:
        record["bayes_auc"], record["bayes_logloss"] = job.bayes.get("test_auc"), job.bayes.get("test_logloss")
    write_record(job, record)
    print(f"[best] step {record['step']} (valid AUC {record['valid_auc']:.5f}): {metrics_text(result)}; "
          f"checkpoint {job.out / 'best'}", flush=True)
    return record
