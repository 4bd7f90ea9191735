"""Reading a user's file safely: refused in seconds, in bounded memory, with a one-line message.

Every file chemtune reads for a user (study files, dataset CSV and ``.smi`` files, teacher CSVs, ``predict``
inputs) goes through :func:`check_file` before any parser sees it, and text is read by :func:`read_lines`:
a line longer than the cap is counted and skipped without being held in memory (a 10 MB SMILES once took
8 GB in RDKit), bytes that are not UTF-8 name their line and byte, and messages quote only a short excerpt.
Limits are set by environment variables (trials inherit ``CHEMTUNE_*``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from trainables.errors import DataError

__all__ = [
    "MAX_INPUT_BYTES_ENV", "MAX_SMILES_ENV", "max_input_bytes", "max_smiles_length", "max_line_bytes",
    "too_long", "long_reason", "excerpt", "check_file", "read_lines", "read_text", "check_text_file",
    "check_inputs",
]

MAX_INPUT_BYTES_ENV = "CHEMTUNE_MAX_INPUT_BYTES"
MAX_SMILES_ENV = "CHEMTUNE_MAX_SMILES_LENGTH"
_DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: USPTO-50K is 6 MB, Lipophilicity 0.3 MB
_DEFAULT_MAX_SMILES = 2000  # the largest ChEMBL molecules are ~1,000 characters
_EXCERPT = 60


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise DataError(f"{name}={excerpt(raw)}: not a whole number") from None
    if value < 1:
        raise DataError(f"{name}={value}: must be 1 or more")
    return value


def max_input_bytes() -> int:
    """The largest input file chemtune reads (``$CHEMTUNE_MAX_INPUT_BYTES``, default 1 GiB)."""
    return _env_int(MAX_INPUT_BYTES_ENV, _DEFAULT_MAX_BYTES)


def max_smiles_length() -> int:
    """The longest SMILES chemtune parses (``$CHEMTUNE_MAX_SMILES_LENGTH``, default 2,000 characters)."""
    return _env_int(MAX_SMILES_ENV, _DEFAULT_MAX_SMILES)


def max_line_bytes() -> int:
    """The longest line kept in memory: room for a SMILES at the limit and a few other columns."""
    return max(1 << 16, 4 * max_smiles_length() + 4096)


def too_long(smiles: str) -> bool:
    """Whether a SMILES is over the limit (checked before RDKit or a tokenizer sees it)."""
    return len(smiles) > max_smiles_length()


def long_reason() -> str:
    """The data report's reason for a row whose SMILES (or whole line) is over the limit."""
    return f"SMILES longer than {max_smiles_length():,} characters ({MAX_SMILES_ENV})"


def excerpt(value: object, limit: int = _EXCERPT) -> str:
    """``repr`` of at most ``limit`` characters of ``value`` (an error message never echoes a whole input)."""
    text = str(value)
    return repr(text[:limit]) + (f"... ({len(text):,} characters)" if len(text) > limit else "")


def check_file(path: str | os.PathLike[str], what: str = "file", max_bytes: int | None = None) -> Path:
    """Refuse what is not a plain, non-empty, dense file under the size limit; return it as a ``Path``.

    Only ``stat`` is used, so a device, a FIFO (whose ``open`` would block) or a 1 TB sparse file is refused
    at once. A sparse file (far fewer bytes stored than its length) is no data file anyone wrote.
    """
    path = Path(path)
    limit = max_input_bytes() if max_bytes is None else max_bytes
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} ({err.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a device, pipe or socket), not a {what}")
    if st.st_size == 0:
        raise DataError(f"{path}: empty {what} (0 bytes)")
    if st.st_size > limit:
        raise DataError(f"{path}: {st.st_size:,} bytes, above the limit of {limit:,} for a {what} "
                        f"(raise {MAX_INPUT_BYTES_ENV} if it is meant)")
    stored = getattr(st, "st_blocks", None)
    # under 0.1% stored: holes, not data (a compressing filesystem such as ZFS stores text 2-10x smaller, not 1000x)
    if stored is not None and st.st_size > (1 << 20) and stored * 512 < st.st_size // 1024:
        raise DataError(f"{path}: a sparse file ({st.st_size:,} bytes long, {stored * 512:,} stored): "
                        f"not a {what}")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: {what} not readable (permission denied)")
    return path


def read_lines(path: Path, max_line: int | None = None) -> Iterator[tuple[int, str | None, int]]:
    """``(line number, text without its newline, bytes)`` per line; ``text`` is ``None`` for a line over
    ``max_line`` bytes (read through in chunks, never held whole). A NUL byte or a byte sequence that is not
    UTF-8 raises :class:`DataError` naming the line and the byte."""
    cap = max_line_bytes() if max_line is None else max_line
    with open(path, "rb") as handle:
        number = 0
        while True:
            chunk = handle.readline(cap + 1)
            if not chunk:
                return
            number += 1
            if len(chunk) > cap:
                size = len(chunk)
                while not chunk.endswith(b"\n"):
                    chunk = handle.readline(1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                yield number, None, size
                continue
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{path}: line {number}, byte {nul + 1}: a NUL byte "
                                "(a binary file, not text)")
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {number}, byte {err.start + 1}: not UTF-8 "
                                f"({chunk[err.start:err.start + 4]!r}); save the file as UTF-8") from None
            if number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark is no part of the header
            yield number, text.rstrip("\r\n"), len(chunk)


def read_text(path: str | os.PathLike[str], what: str = "file", max_bytes: int | None = None) -> str:
    """A whole small text file (a study file), checked: size, UTF-8 (line and byte), no NUL."""
    path = check_file(path, what, max_bytes)
    lines = []
    for number, text, size in read_lines(path):
        if text is None:
            raise DataError(f"{path}: line {number} is {size:,} bytes long: not a {what}")
        lines.append(text)
    return "\n".join(lines) + "\n"


def check_text_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """:func:`check_file`, then one streamed pass of :func:`read_lines` (UTF-8, NUL): a bad file is refused
    before any slow import or parser. Over-long lines pass here (the reader counts them as bad rows), unless
    no line fits: then nothing in the file is a header or a row."""
    path = check_file(path, what)
    first, fits = None, False
    for number, text, size in read_lines(path):
        fits = fits or text is not None
        first = first or (number, size)
    if not fits and first is not None:
        raise DataError(f"{path}: no line is under {max_line_bytes():,} bytes (line {first[0]} is {first[1]:,}): "
                        f"not a {what}")
    return path


def check_inputs(paths: dict[str, str | None], folders: tuple[str, ...] = ("dataset.path",)) -> None:
    """Check a study's input files up front (``validate``, ``launch``).

    Args:
        paths: study key -> path (``dataset.path``, ``pool.path``, ``options.teacher_csv``).
        folders: Keys that may name a folder (USPTO-50K's ``train/valid/test.smi``): left to their loaders.
    """
    for key, value in paths.items():
        if value and not (key in folders and Path(value).expanduser().is_dir()):
            try:
                check_text_file(Path(value).expanduser(), "data file")
            except DataError as err:
                raise DataError(f"{key}: {err}") from None
