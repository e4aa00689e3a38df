"""Annotation spreadsheets (.xlsx, or a .csv export of the same sheet) read by header text.

The real files put their header in different places (CASME II on row 1 with two
blank columns, SAMM on row 14 under 13 rows of notes), and exports rename or
reorder columns (pandas writes ``Unnamed: 2`` for a blank header and may add an
index column). So nothing here assumes a position: the header row is the first
row that holds every required column, columns are matched by their header text
(case, spaces and punctuation ignored: ``OnsetFrame`` == ``Onset Frame``), and
every data row keeps its row number (the spreadsheet's, 1-based) for messages.

No pandas: openpyxl for .xlsx, the csv module for .csv.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fr_mer.errors import FrMerError
from fr_mer.limits import MAX_SHEET_CELLS, MAX_CELL_DIGITS

#: How far down the header may sit (SAMM's is on row 14).
MAX_HEADER_ROW = 50

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")


class SheetError(FrMerError, ValueError):
    """A spreadsheet that cannot be used at all; the message names the file."""


def header_key(text: object) -> str:
    """Comparison key of a header cell: lower case, letters and digits only."""
    return _NOT_ALNUM.sub("", str(text).lower()) if text is not None else ""


def cell_int(value: object) -> int | None:
    """A whole number from a cell (``46``, ``46.0``, ``'46'``, ``' 46 '``), else None.

    ``'/'``, blanks, text, fractional numbers, NaN, infinities and numbers of more than
    :data:`~fr_mer.limits.MAX_CELL_DIGITS` digits (a 400-digit frame number) give None;
    the caller decides whether that is a repair or an unusable row.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():  # NaN and the infinities included
            return None
        number = int(value)
    else:
        text = str(value).strip()
        if not _INTEGER.fullmatch(text) or len(text.split(".")[0].lstrip("+-")) > MAX_CELL_DIGITS:
            return None
        number = int(text.split(".")[0])
    return number if abs(number) < 10 ** MAX_CELL_DIGITS else None


def cell_text(value: object) -> str:
    """A cell as stripped text; whole floats lose their ``.0`` (``6.0`` -> ``'6'``)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclasses.dataclass(frozen=True)
class SheetRow:
    """One data row: ``row`` is its number in the file (1-based), ``cells`` by field name."""

    row: int
    cells: Mapping[str, object]

    def __getitem__(self, field: str) -> object:
        return self.cells.get(field)

    def get(self, field: str, default: object = None) -> object:
        value = self.cells.get(field)
        return default if value is None else value

    def is_blank(self) -> bool:
        return all(cell_text(v) == "" for v in self.cells.values())


@dataclasses.dataclass
class Sheet:
    """The data rows of one sheet below its header row (rows blank in every column read are
    left out)."""

    path: Path
    sheet: str | None
    header_row: int
    columns: dict[str, str]  # field -> header text as written in the file
    rows: list[SheetRow]

    @property
    def where(self) -> str:
        """``file`` or ``file, sheet NAME`` for messages."""
        return f"{self.path}, sheet {self.sheet}" if self.sheet else str(self.path)


def read_table(
    path: Path | str,
    columns: Mapping[str, Sequence[str]],
    *,
    required: Iterable[str] | None = None,
    sheets: Sequence[str] = (),
    max_header_row: int = MAX_HEADER_ROW,
) -> Sheet:
    """Read the rows of an annotation sheet, columns found by header text.

    ``columns`` maps a field name to the header texts that mean it, e.g.
    ``{"onset": ("OnsetFrame",)}``; ``required`` (default: all fields) must all
    be in the header row. ``sheets``: sheet names to try first in an .xlsx
    (e.g. ``MICRO_ONLY``); other sheets are tried after them. Raises
    :class:`SheetError` naming the file when it cannot be read or no sheet has
    a header row with the required columns.
    """
    path = Path(path)
    required = tuple(columns) if required is None else tuple(required)
    keys = {field: {header_key(t) for t in texts} for field, texts in columns.items()}
    if path.is_dir():
        raise SheetError(f"{path}: is a folder; give the annotation spreadsheet file itself")
    if not path.is_file():
        raise SheetError(f"{path}: annotation file not found; check the path given")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        candidates = _xlsx_sheets(path, sheets)
    elif suffix in (".csv", ".txt"):
        candidates = [(None, _csv_rows(path))]
    elif suffix == ".xls":
        raise SheetError(
            f"{path}: the old .xls format is not read; open it in a spreadsheet program "
            "and save it as .xlsx (or export the sheet as .csv)"
        )
    else:
        raise SheetError(f"{path}: expected an .xlsx file or a .csv export of its sheet")

    closest: tuple[int, str | None, int, list[str]] | None = None
    for sheet_name, rows in candidates:
        found = _find_header(rows, keys, required, max_header_row)
        if isinstance(found, tuple) and found[0] == "header":
            _, header_row, mapping, header_cells, data = found
            return Sheet(
                path=path,
                sheet=sheet_name,
                header_row=header_row,
                columns={f: str(header_cells[i]).strip() for f, i in mapping.items()},
                rows=[
                    row
                    for row in (
                        SheetRow(number, {f: _at(cells, i) for f, i in mapping.items()})
                        for number, cells in data
                    )
                    if not row.is_blank()
                ],
            )
        if found is not None:
            matched, row_number, missing = found[1], found[2], found[3]
            if closest is None or matched > closest[0]:
                closest = (matched, sheet_name, row_number, missing)

    wanted = ", ".join(columns[f][0] for f in required)
    if closest is None or closest[0] == 0:
        hint = "no row of it holds any of these headers"
    else:
        _, sheet_name, row_number, missing = closest
        where = f"sheet {sheet_name}, row {row_number}" if sheet_name else f"row {row_number}"
        hint = f"the closest row ({where}) lacks {', '.join(missing)}"
    raise SheetError(
        f"{path}: no header row with the columns {wanted} in the first {max_header_row} "
        f"rows ({hint}); give the original annotation spreadsheet, unmodified, or a .csv "
        "export of its sheet with the header row kept"
    )


def _at(cells: Sequence[object], index: int) -> object:
    if index >= len(cells):
        return None
    value = cells[index]
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _find_header(rows, keys, required, max_header_row):
    """("header", row, mapping, cells, data rows) or ("closest", matched, row, missing)."""
    best = None
    iterator = iter(rows)
    for number, cells in iterator:
        if number > max_header_row:
            break
        cell_keys = [header_key(c) for c in cells]
        mapping: dict[str, int] = {}
        for field, accepted in keys.items():
            for index, key in enumerate(cell_keys):
                if key and key in accepted:
                    mapping[field] = index
                    break
        missing = [f for f in required if f not in mapping]
        if not missing:
            return ("header", number, mapping, list(cells), list(iterator))
        matched = len(required) - len(missing)
        if matched and (best is None or matched > best[1]):
            best = ("closest", matched, number, missing)
    return best


#: What a damaged .xlsx raises while it is opened or its sheets are parsed: a broken
#: zip (or a member failing its CRC), truncated or corrupt XML (ElementTree's and
#: lxml's parse errors are SyntaxErrors), a missing part, a value the parser refuses.
_BROKEN_XLSX = (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, ValueError,
                IndexError, TypeError, SyntaxError)


def _xlsx_sheets(path: Path, preferred: Sequence[str]):
    try:
        return _read_xlsx(path, preferred)
    except _BROKEN_XLSX as error:
        raise SheetError(
            f"{path}: cannot be read as an .xlsx file ({type(error).__name__}: {error}); "
            "download it again or export its sheet as .csv"
        ) from None


def _read_xlsx(path: Path, preferred: Sequence[str]):
    import openpyxl

    # read_only streams the sheet; data_only gives the cached value of
    # formula cells (SAMM's Duration) instead of the formula text.
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        names = list(book.sheetnames)
        lowered = {n.lower(): n for n in names}
        order = [lowered[p.lower()] for p in preferred if p.lower() in lowered]
        order += [n for n in names if n not in order]
        result = []
        for name in order:
            sheet = book[name]
            if hasattr(sheet, "reset_dimensions"):
                # Some writers store a wrong sheet size; ignore it and read every row.
                sheet.reset_dimensions()
            rows, cells = [], 0
            for number, values in enumerate(sheet.iter_rows(min_row=1, values_only=True), 1):
                # a few kilobytes of XML can declare millions of cells (one at column XFD on each row)
                cells += len(values)
                if cells > MAX_SHEET_CELLS:
                    raise SheetError(
                        f"{path}, sheet {name}: more than {MAX_SHEET_CELLS:,} cells by row {number} (its last cell "
                        f"is in column {len(values)}); not an annotation sheet: give the original spreadsheet, "
                        "or delete the far rows and columns"
                    )
                rows.append((number, _trimmed(values)))
            result.append((name, rows))
    finally:
        book.close()
    return result


def _trimmed(values: tuple) -> tuple:
    """A row without its trailing empty cells (a far cell's padding is not kept in memory)."""
    end = len(values)
    while end and values[end - 1] is None:
        end -= 1
    return tuple(values[:end])


def _csv_rows(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    raw = path.read_bytes()
    # Excel's "Unicode text" and some exports are UTF-16 (with a byte-order mark)
    encodings = ("utf-16",) if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig", "cp1252", "latin-1")
    if encodings != ("utf-16",) and b"\x00" in raw[:4096]:
        raise SheetError(
            f"{path}: holds NUL bytes: a UTF-16 or UTF-32 text without a byte-order mark, or not a text file; "
            "save the sheet as CSV UTF-8 (or .xlsx)"
        )
    for encoding in encodings:
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            if encoding == "utf-16":
                raise SheetError(f"{path}: starts with a UTF-16 byte-order mark but is not UTF-16 text; save "
                                 "the sheet as CSV UTF-8 (or .xlsx)") from None
            continue
    # Excel writes ';' instead of ',' in some locales; the separator is the
    # candidate that occurs most in the first lines (note rows are mostly separators).
    head = text.splitlines()[:20]
    delimiter = max(",;\t", key=lambda d: sum(line.count(d) for line in head))
    # Records, not physical lines: a quoted Notes cell may hold a line break, and
    # the record number is the row number the spreadsheet showed.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, tuple[str, ...]]] = []
    try:
        for number, cells in enumerate(reader, start=1):
            rows.append((number, tuple(cells)))
    except csv.Error as error:
        # e.g. a cell over the csv module's field limit (128 KiB): not an annotation sheet.
        raise SheetError(
            f"{path}, row {len(rows) + 1}: cannot be read as CSV ({error}); give the annotation "
            "sheet itself (an export of the original spreadsheet)"
        ) from None
    return rows
