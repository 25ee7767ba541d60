"""Ranks that agree: every rank's resolved settings and dataset against rank 0's, in one collective.

Data parallelism sums the ranks' gradients, so replicas stay equal even when the ranks train on
different data or with a different --lr: the replica check (replicas.py) cannot see it, and the run
would end with exit 0. So before the first step every rank sends rank 0 what it resolved (every
field of RunConfig, the hyperparameters one by one) and the fingerprint of its dataset, in one
allgather, and every rank draws the same verdict from the same list.

This runs before any collective whose shape depends on a setting: --shard-tables changes which
collectives a step makes, so a rank started without it would otherwise wait in a collective that
the others never call.

The dataset is compared by content (data_fingerprint: meta.json's sha256, which records every
shard's checksum and, where written, the vocabularies' digest), not by path: a node-local copy may
sit at another path, and a stale copy may sit at the same one.
"""
import dataclasses

FINGERPRINT = "data_fingerprint"
NOT_COMPARED = ("data",)     # the path; its content is compared through the fingerprint
# RunConfig field -> the command-line option that sets it, where the names differ
OPTION_OF = {"epochs": "--epoch", "embed_dim": "--sparse_embed_dim", "hp": None}


class RanksDisagree(ValueError):
    """Some rank resolved other settings or found other data than rank 0; the message names them."""


def settings_of(cfg, fingerprint: str) -> dict:
    """RunConfig -> {name: value} to compare: every field, each hyperparameter on its own, and
    the dataset's fingerprint in place of its path."""
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_COMPARED and k != "hp"}
    values.update({f"hp.{k}": v for k, v in cfg.hp.items()})
    values[FINGERPRINT] = fingerprint
    return values


def option_name(key: str) -> str:
    if key.startswith("hp."):
        return "--" + key[3:]
    return OPTION_OF.get(key) or "--" + key


def disagreements(everyone: list[dict], data_paths: list[str]) -> list[str]:
    """[settings of rank 0, of rank 1, ...] -> one line per (rank, setting) that differs from rank 0."""
    root, lines = everyone[0], []
    for rank, theirs in enumerate(everyone[1:], start=1):
        for key in sorted(root.keys() | theirs.keys()):
            mine, yours = root.get(key), theirs.get(key)
            if mine == yours:
                continue
            if key == FINGERPRINT:
                lines.append(f"rank {rank}'s dataset ({data_paths[rank]}, meta.json {str(yours)[:19]}...) is not "
                             f"rank 0's ({data_paths[0]}, {str(mine)[:19]}...): give every rank a copy of the "
                             f"same dataset")
            else:
                lines.append(f"{option_name(key)} is {yours!r} on rank {rank} but {mine!r} on rank 0")
    return lines


def check_ranks_agree(comm, cfg, fingerprint: str) -> None:
    """One allgather; raises RanksDisagree on every rank (the same message) if any rank differs."""
    everyone = comm.allgather_object((settings_of(cfg, fingerprint), str(cfg.data)))
    lines = disagreements([s for s, _ in everyone], [p for _, p in everyone])
    if lines:
        more = f" (and {len(lines) - 1} more difference(s))" if len(lines) > 1 else ""
        raise RanksDisagree(f"the ranks were started with different settings: {lines[0]}{more}; every rank "
                            f"must run the same command on the same data")
