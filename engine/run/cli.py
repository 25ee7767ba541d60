"""The command line of the main job: `python -m engine.train` (see engine/train.py for the loop).

Hyperparameters: --scale-rule auto (the default) trains the reference train.py's defaults when --bs
equals --base-bs (1024; its baseline command) and otherwise computes lr, lr_embed, l2, clip, bound,
warmup and init_stddev for --bs with the CowClip rule from the dataset's base (engine/scaling.py,
resolved in engine/run/config.py); any of them given on the command line wins. The reference
train.py's flags are accepted as it spells them (--lr_embed, --init_stddev, ...) and with dashes.
"""
import contextlib
import json
from pathlib import Path

import click
from click.core import ParameterSource

from engine.run.checkpoint import recover_checkpoint
from engine.run.config import LOG_EVERY, REFERENCE_EPOCHS, SYNTHETIC_EPOCHS, RunConfig, options_from_config, resolve
from engine.run.directory import claim_run_dir, clear_run_files, locked
from engine.run.errors import TrainingError
from engine.run.phases import finished
from engine.run.options import COUNT, NON_NEGATIVE, POSITIVE_INT, PROBABILITY_BELOW_ONE, SEED
from engine.run.process import SingleProcess
from engine.run.report import auc_text, number_text
from engine.scaling import CLI_RULES

def _both(name: str, *more, **kwargs):
    """An option spelled as the reference does (--lr_embed) and with dashes (--lr-embed)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else []) + list(more)
    return click.option(*spellings, name, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_both("model", default="deepfm", show_default=True,
       help="lr, fm, wdl (WD), deepfm, dcn, dcnmix (= DCNv2, as the reference: DeepCTR's DCNMix), "
            "dcnv2full (full-rank DCN-v2); any case")
@_both("bs", default=1024, show_default=True, type=POSITIVE_INT, help="batch size (the reference's default)")
@_both("data", default=None, help="dataset directory (dataio format); default: the built-in synthetic set")
@_both("dataset", default=None,
       help="criteo_kaggle | avazu | synthetic: picks the base hyperparameters; default: the kind in the "
            "data's meta.json (a --dataset that contradicts it is an error)")
@_both("lr", default=None, type=NON_NEGATIVE, help="dense learning rate (default: from --scale-rule)")
@_both("lr_embed", default=None, type=NON_NEGATIVE, help="embedding learning rate (default: from --scale-rule)")
@_both("l2", default=None, type=NON_NEGATIVE, help="L2 weight lambda on tables and the linear kernel")
@_both("clip", default=None, type=NON_NEGATIVE, help="CowClip r; 0 turns CowClip off")
@_both("bound", default=None, type=NON_NEGATIVE,
       help="CowClip zeta: in --clip-form reference (default) the reference's --bound, used as "
            "min_w = r*sqrt(dim)*bound; in --clip-form paper the floor zeta itself")
@_both("clip_form", default="reference", show_default=True, type=click.Choice(["reference", "paper"]))
@_both("warmup", default=None, type=NON_NEGATIVE, help="epochs of linear dense-lr warm-up")
@_both("init_stddev", default=None, type=NON_NEGATIVE, help="embedding init stddev (default 1e-2 under cowclip, else 1e-4)")
@_both("epoch", "--epochs", default=None, type=POSITIVE_INT,
       help=f"epochs (default {REFERENCE_EPOCHS}; {SYNTHETIC_EPOCHS} on the built-in synthetic set)")
@_both("sparse_embed_dim", default=10, show_default=True, type=POSITIVE_INT)
@_both("dropout", default=0.0, show_default=True, type=PROBABILITY_BELOW_ONE)
@_both("seed", default=1235, show_default=True, type=SEED)
@_both("split", default=None,
       help="rand | seq | highfreq | x4: must match the split recorded in the data's meta.json (preprocessing "
            "makes the split; default: the recorded one)")
@_both("device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@_both("scale_rule", default="auto", show_default=True, type=click.Choice(list(CLI_RULES)),
       help="auto: the reference train.py's defaults when --bs equals --base-bs, else cowclip; "
            "none | sqrt | linear | cowclip: scale from the dataset's base at --base-bs")
@_both("base_bs", default=1024, show_default=True, type=POSITIVE_INT)
@_both("embed_optim", default="dense", show_default=True, type=click.Choice(["dense", "lazy"]),
       help="dense: the reference's table-wide L2 and Adam on every row; lazy: only the batch's rows")
@_both("out", default=None, help="run directory (default runs/<model>-bs<bs>-<time>)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint")
@click.option("--overwrite", is_flag=True, help="replace the run already in --out (its checkpoint and logs)")
@_both("eval_every", default=0, type=COUNT, help="evaluate every N steps (default: at each epoch's end)")
@_both("accum", default=1, show_default=True, type=POSITIVE_INT, help="process each batch as N micro-batches (exact)")
@_both("audit", is_flag=True, help="log CowClip statistics at each logged step")
@_both("log_every", "--log_freq", "--log-freq", default=None, type=POSITIVE_INT,
       help=f"a metrics.jsonl line every N steps (default {LOG_EVERY}; the reference's --log_freq, whose default "
            f"is 100, sets the same cadence of its TensorBoard scalars)")
@_both("opt", default="adam", show_default=True,
       help="optimizer, as the reference's --opt: only adam (Keras Adam) is implemented there and here; "
            "any other value stops with an error")
@_both("log", is_flag=True,
       help="as the reference's --log: per-parameter norms of weights, gradients and Adam m, v in "
            "metrics.jsonl at each logged step")
@_both("eager", is_flag=True,
       help="accepted for the reference's command lines (Keras run_eagerly); this engine always runs eagerly, "
            "so it changes nothing")
@_both("profile", is_flag=True,
       help="as the reference's --profile (batches 80-100): cProfile over steps 80-100 into RUN/profile.txt")
@_both("early_stop", default=0, type=COUNT,
       help="stop after N evaluations without a better valid AUC; keeps RUN/best/ and reports its test metrics "
            "(needs a 'valid' split)")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
       help="re-run a saved RUN/config.json; flags given on the command line win over it")
@_both("checkpoint_every", default=0, type=COUNT, help="also checkpoint every N steps (always at epoch ends)")
@_both("max_steps", default=0, type=COUNT, help="stop after N steps (0: run all epochs)")
@_both("dist", default="none", show_default=True, type=click.Choice(["none", "mpi"]),
       help="mpi: data-parallel over the ranks of `mpiexec -n N` (engine/dist; pip install -e '.[mpi]')")
@_both("shard_tables", is_flag=True, help="with --dist mpi: rank r holds the table rows with row %% N == r")
@_both("check_replicas_every", default=50, show_default=True, type=COUNT,
       help="with --dist mpi: compare the replicas' digests every K steps (0: never)")
@click.pass_context
def main(ctx, **opts):
    """Train a CTR model with CowClip and evaluate it on the test split."""
    from engine.train import run

    overwrite = opts.pop("overwrite")
    process = SingleProcess()
    try:
        process = connect(opts)
        root = process.is_root   # under MPI rank 0 alone claims, locks and writes the run directory
        opts = apply_config_file(ctx, opts)
        if opts["out"] and root:   # first, so that a run already there is refused before any other check
            claim_run_dir(Path(opts["out"]), opts["resume"], overwrite)
        cfg, out = resolve(opts, explicit_options(ctx, opts))
        process.settle(cfg, opts["resume"])
        out = process.agree(out)   # rank 0's run directory (its default name has the time in it)
        if not opts["out"] and root:
            claim_run_dir(out, opts["resume"], overwrite)
        with locked(out) if root else contextlib.nullcontext():
            if overwrite and root:
                clear_run_files(out)
            if opts["resume"]:
                refuse_finished_run(out, cfg, root)
            process.barrier()   # the other ranks read the run directory once rank 0 has recovered it
            final = run(cfg, out, opts["resume"], process=process)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError, TrainingError) as error:
        message = error.message if isinstance(error, TrainingError) else (
            str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
        process.abort(message)   # under MPI the other ranks may wait in a collective: stop them all
        raise TrainingError(message)
    except MemoryError as error:  # the estimate (engine/run/footprint.py) is a lower bound; this is the rest
        raise TrainingError(f"out of memory: {str(error).strip() or 'an allocation failed'}; use a smaller --bs "
                            f"or --sparse_embed_dim, or --accum")
    bayes = f" (Bayes-optimal {final['bayes_auc']:.4f})" if final.get("bayes_auc") else ""
    which = f"best checkpoint (step {final['step']}) " if "valid_auc" in final else ""
    print(f"[done] {which}test AUC {auc_text(final)}{bayes}, logloss {number_text(final['logloss'])}, "
          f"{final['steps']} steps, {final['wall_seconds']:.0f}s; run directory {out}")


def explicit_options(ctx: click.Context, opts: dict) -> frozenset:
    """Names of the options the user gave (on the command line or through the environment), not defaults."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(name for name in opts if ctx.get_parameter_source(name) in given)


def refuse_finished_run(out: Path, cfg: RunConfig, root: bool = True) -> None:
    """--resume of a run with nothing left to do (engine/run/phases.py's finished: no step left and its
    final_metrics.json written). root: this process may finish an interrupted checkpoint swap (under
    MPI, rank 0 alone)."""
    recovered = recover_checkpoint(out) if root else None
    if recovered:
        print(f"{out}: {recovered}")
    state = out / "checkpoint" / "state.json"
    if state.is_file():
        position = json.loads(state.read_text())
        if finished(out, cfg, position):
            raise TrainingError(f"{out}: the run already finished (global step {position.get('global_step')}); "
                                f"its results are in {out / 'final_metrics.json'}. Evaluate it with "
                                f"python -m engine.evaluate --run {out}, or train on with --max-steps N (0: every epoch)")


def apply_config_file(ctx: click.Context, opts: dict) -> dict:
    """--config FILE: the saved run's options, under the ones given on the command line."""
    path = opts.pop("config_file")
    if path is None:
        return opts
    if opts["resume"]:
        raise ValueError("--config and --resume: --resume already continues from the run's own config.json")
    given = {name for name in opts
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    return options_from_config(opts, path, given)


def connect(opts: dict):
    """--dist mpi -> engine.dist's Distributed for this rank; --dist none imports no MPI."""
    if opts["dist"] == "none" and not opts["shard_tables"]:
        return SingleProcess()
    from engine.dist import connect as connect_mpi

    return connect_mpi(opts["dist"], opts["shard_tables"], opts["check_replicas_every"])
