"""Tiny raw Criteo and Avazu files for the data-layer tests."""
from pathlib import Path

from dataio.avazu_format import AVAZU_SPARSE


def criteo_line(i: int, dense: str | None = None) -> str:
    """A good Criteo line; dense overrides I1."""
    values = [dense if dense is not None else str(i % 7)] + [str((i * j) % 11) for j in range(2, 14)]
    cats = [f"{(i * 2654435761 + j) % 50:08x}" for j in range(26)]
    return "\t".join([str(i % 2)] + values + cats) + "\n"


def criteo_file(path: Path, n: int = 40, lines: dict | None = None) -> Path:
    text = [criteo_line(i) for i in range(n)]
    for k, v in (lines or {}).items():
        text[k] = v
    path.write_text("".join(text))
    return path


AVAZU_HEADER = ("id,click," + ",".join(AVAZU_SPARSE)).encode()


def avazu_file(path: Path, n: int = 30, site_ids: dict | None = None) -> Path:
    rows = [AVAZU_HEADER]
    for i in range(n):
        vals = [str(i).encode(), str(i % 2).encode(), b"14102100"] + [str((i * j) % 5).encode() for j in range(21)]
        if site_ids and i in site_ids:
            vals[2 + AVAZU_SPARSE.index("site_id")] = site_ids[i]
        rows.append(b",".join(vals))
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path
