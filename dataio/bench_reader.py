"""Benchmark: rows/s of BatchReader over one shuffled epoch at batch 131072, data in the page cache.

    python -m dataio.bench_reader [--data DIR] [--batch-size 131072] [--epochs 2] [--stream]

Without --data it uses (and builds once) the default synthetic set, dataio.synthetic.ensure_default().
Epoch 0 is a warm-up (loads shards / fills the page cache); the following epochs are timed.
"""
from __future__ import annotations

import time

import click

from dataio.reader import BatchReader
from dataio.synthetic import ensure_default


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="train", show_default=True)
@click.option("--batch-size", default=131072, show_default=True, type=click.IntRange(min=1))
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(min=1),
              help="timed epochs after the warm-up epoch")
@click.option("--stream", is_flag=True, help="force the streaming (shard window) mode")
def main(data: str | None, split: str, batch_size: int, epochs: int, stream: bool) -> None:
    """Rows/s of BatchReader over shuffled epochs (default data: the built-in synthetic set)."""
    data = data or str(ensure_default())
    kw = {"in_memory_bytes": 0} if stream else {}
    try:
        reader = BatchReader(data, split, batch_size, shuffle=True, seed=0, **kw)
    except (ValueError, KeyError, OSError) as error:   # a damaged dataset, a split it lacks
        raise click.ClickException(str(error.args[0]) if isinstance(error, KeyError) else str(error)) from None
    mode = "memory" if reader.in_memory else "streaming"
    t0 = time.perf_counter()
    for _ in reader.iter_epoch(0):
        pass
    print(f"warm-up epoch: {reader.num_rows / (time.perf_counter() - t0) / 1e6:.2f} M rows/s")
    t0 = time.perf_counter()
    rows = 0
    for epoch in range(1, epochs + 1):
        for batch in reader.iter_epoch(epoch):
            rows += len(batch.label)
    dt = time.perf_counter() - t0
    print(f"{data} split={split} mode={mode} batch={batch_size} shuffle=True: "
          f"{rows} rows in {dt:.2f} s = {rows / dt / 1e6:.2f} M rows/s")


if __name__ == "__main__":
    main()
