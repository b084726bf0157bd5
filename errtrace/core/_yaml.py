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
    # A path with a newline or NUL in it is shown quoted: one message, one line.
    name = str(p) if str(p).isprintable() else repr(str(p))
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigFileError(
                f"{name}: file is {size} bytes, over the {MAX_FILE_BYTES} limit"
            )
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{name}: not UTF-8 text: {exc}") from exc
    except ValueError as exc:  # a path holding a NUL character
        raise ConfigFileError(f"{name}: cannot read: {exc}") from exc
    try:
        return yaml.load(text, Loader=_loader_class())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(f"{where}: invalid YAML: {problem}") from exc
    except RecursionError:
        raise ConfigFileError(f"{name}: invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:
        # A scalar the safe constructor cannot build: an impossible date
        # (2020-02-31), an integer past Python's digit limit.
        raise ConfigFileError(f"{name}: invalid YAML value: {str(exc)[:200]}") from exc


_LOADER: Any = None


def _loader_class() -> Any:
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping (the plain
    loader keeps the last value silently, so a setting could be lost unseen)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        if key in seen:
                            raise yaml.constructor.ConstructorError(
                                "while constructing a mapping", node.start_mark,
                                f"key {key!r} is given twice", key_node.start_mark,
                            )
                        seen.add(key)
                    except TypeError:  # an unhashable key: the base class reports it
                        continue
                return super().construct_mapping(node, deep=deep)

        _LOADER = UniqueKeyLoader
    return _LOADER
