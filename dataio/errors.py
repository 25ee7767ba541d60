"""Bad input lines: the one error type of preprocessing, and the log of skipped lines.

Every message names the file and the line (and the column or option where one applies), so the
command line prints it as a single line. Memory is bounded whatever the input: the log keeps a
count per kind of error and the first few lines only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class PreprocessError(ValueError):
    """Bad input or options: the message names the file and line, or the option."""


@dataclass
class ErrorLog:
    """Bad lines: raise at the first (mode "fail") or count them and keep the first few ("skip")."""
    path: Path
    mode: str
    format_hint: str = ""          # appended when a line does not look like the expected format at all
    count: int = 0
    by_kind: dict = field(default_factory=dict)
    first: list = field(default_factory=list)
    keep_first: int = 10

    @property
    def stop_at_first(self) -> bool:
        return self.mode == "fail"

    def add(self, line: int, message: str, column: str, format_error: bool = False) -> None:
        """One bad line. format_error: the line's shape is wrong (columns, label), so add the hint."""
        if self.mode == "fail":
            hint = f"; {self.format_hint}" if format_error and self.format_hint else ""
            raise PreprocessError(f"{self.path}:{line}: column {column}: {message}{hint} "
                                  f"(use --on-error skip to drop bad lines)")
        self.count += 1
        self.by_kind[message] = self.by_kind.get(message, 0) + 1
        if len(self.first) < self.keep_first:
            self.first.append({"line": int(line), "column": column, "error": message})

    def add_uncounted(self, message: str, n: int) -> None:
        """n more bad lines of one kind whose line numbers were not kept (skip mode only)."""
        if n:
            self.count += n
            self.by_kind[message] = self.by_kind.get(message, 0) + n

    def summary(self) -> dict:
        return {"skipped_lines": self.count, "by_kind": self.by_kind, "first": self.first}
