"""The one loop over a CSV file with a header, shared by the FER2013 CSV and manifest readers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Iterator

from fer_models.data.errors import DatasetError


def csv_rows(path: Path, *, columns: Callable[[list[str]], dict[str, int]],
             expected_header: str) -> Iterator[tuple[int, list[str], dict[str, int]]]:
    """Yield ``(line number, row, column positions)`` for every non-blank row.

    ``columns`` maps the header to column positions (and raises naming what is missing). An empty
    file or a row shorter than the columns it needs raises :class:`DatasetError` naming the line.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path} is empty: {expected_header}")
        cols = columns(header)
        width = max(cols.values()) + 1
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if not row or all(not cell.strip() for cell in row):
                continue  # blank line
            if len(row) < width:
                raise DatasetError(f"{where}: got {len(row)} fields, expected at least {width} "
                                   f"(columns {', '.join(header)})")
            yield reader.line_num, row, cols
