"""Pydantic validation errors as people read them: one line per problem, naming the dotted key, the value
given and what would be valid (the range of a number, the known keys beside an unknown one). Works for any
model."""

from __future__ import annotations

from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _field_model_and_name(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], str] | None:
    current = model
    for index, part in enumerate(loc):
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        if index == len(loc) - 1:
            return current, str(part)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            return None
    return None


def valid_range(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The valid range of a numeric field as text, e.g. ``1 <= value <= 1000000``."""
    found = _field_model_and_name(model, loc)
    if found is None:
        return None
    owner, name = found
    low = high = ""
    for meta in owner.model_fields[name].metadata:
        if isinstance(meta, annotated_types.Ge):
            low = f"{meta.ge} <= "
        elif isinstance(meta, annotated_types.Gt):
            low = f"{meta.gt} < "
        elif isinstance(meta, annotated_types.Le):
            high = f" <= {meta.le}"
        elif isinstance(meta, annotated_types.Lt):
            high = f" < {meta.lt}"
    return f"{low}value{high}" if (low or high) else None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        current = field.annotation
    return sorted(current.model_fields)


def format_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: ``plan.per_class = 0: out of range, valid range 1 <= value <= 1000000``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "config"
        given = err.get("input")
        shown = repr(given) if not isinstance(given, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if err["type"] == "extra_forbidden":
            keys = ", ".join(_known_keys(model, loc))
            lines.append(f"{where}: unknown key; valid keys here: {keys}")
        elif err["type"] in _RANGE_ERRORS:
            rng = valid_range(model, loc) or err["msg"]
            lines.append(f"{where} = {shown}: out of range, valid range {rng}")
        else:
            lines.append(f"{where} = {shown}: {err['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
