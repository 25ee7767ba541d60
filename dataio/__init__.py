"""Data input for cowclip-engine: sharded HDF5 datasets, preprocessing, synthetic data, batch reader.

Symbols used throughout: N rows, B batch size, F sparse (categorical) fields, D dense features.

Modules, one idea each:
    shards.py      one HDF5 shard: write, read, validate
    meta.py        meta.json of a dataset directory: write, load, validate
    writer.py      streams rows of a split into fixed-size shards inside a temp dir, published atomically
    reader.py      BatchReader (shuffled, resumable, prefetched batches) and read_split
    synthetic.py   Criteo-shaped data with a planted logistic model and known Bayes metrics
    tokenize.py    Numba tokenizer for raw Criteo TSV bytes (the fast path of preprocessing)
    criteo_format.py, avazu_format.py   the two raw formats: columns, chunk -> arrays
    chunks.py      whole-line chunks of a file; the input must not change between passes
    errors.py      PreprocessError and the bounded log of skipped lines
    splits.py      seeded train / valid / test assignment
    outdir.py      what an existing --out may be, links, leftover temp dirs, SIGTERM clean-up
    vocab.py       vocabularies in the reference (LabelEncoder) order, min-count/OOV, save/load
    transforms.py  dense transforms (min-max, log, criteo_x4 buckets)
    preprocess.py  raw Criteo/Avazu file -> dataset directory (two streaming passes) and its CLI
"""

FORMAT_VERSION = 1
