"""Loading YAML documents with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 4 * 1024 * 1024


class ConfigFileError(ValueError):
    """Raised when a YAML file cannot be read or parsed."""


def load_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file safely; the error message names the file (and line if known)."""
    import yaml

    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigFileError(f"{p}: file is {size} bytes, over the {MAX_FILE_BYTES} limit")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{p}: not UTF-8 text: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(f"{where}: invalid YAML: {problem}") from exc
