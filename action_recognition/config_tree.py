"""The nested-dict side of the configuration: ``section.key`` paths, override values parsed as YAML, trees
merged section by section. No pydantic here; :mod:`action_recognition.config` validates the result."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from action_recognition.errors import ConfigError


def parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``3`` -> int, ``[a, b]`` -> list, ``x`` -> str)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    """Put ``value`` at ``dotted`` (``section.key``) in ``tree``; ``origin`` names where it came from in
    the error."""
    parts = dotted.split(".")
    if not all(re.fullmatch(r"[a-z_][a-z0-9_]*", p) for p in parts):
        raise ConfigError(f"{origin}: {dotted!r} is not a config key (expected section.key, lower case)")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {dotted!r} goes below {part!r}, which is a value, not a section")
        node = child
    node[parts[-1]] = value


def merge_trees(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, section by section."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_trees(out[key], value)
        else:
            out[key] = value
    return out
