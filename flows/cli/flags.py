"""Command-line flags generated from a pydantic model's fields, so a setting is spelled in one place; and
the argument type of catalogue and SKU ids.

Each field ``some_name`` becomes ``--some-name`` with the field's description as its help: booleans get
``--x/--no-x``, ``Literal`` fields their choices, lists are repeatable. A flag left out is ``None`` and
:func:`given_values` drops it, so the preset, the environment or the field's default applies.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel


def _inner(annotation: Any) -> Any:
    """``X`` for ``X | None``; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_model_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    skip: set[str] = frozenset(),
) -> list[str]:
    """Add one flag per field of ``model`` (``--field-name``); the fields."""
    added = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = _inner(field.annotation)
        options = [f"--{name.replace('_', '-')}"]
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or name.replace("_", " ")) + f" (default: {default})"
        spec: dict[str, Any] = {"dest": name, "default": None, "help": help_text.replace("%", "%%")}
        if kind is bool:
            spec["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            spec["choices"] = list(typing.get_args(kind))
        elif typing.get_origin(kind) is list:
            spec.update(action="append", type=typing.get_args(kind)[0], metavar="VALUE")
        elif kind in (int, float, str):
            spec["type"] = kind
        else:
            raise TypeError(f"{model.__name__}.{name}: no flag for a field of type {field.annotation}")
        parser.add_argument(*options, **spec)
        added.append(name)
    return added


def given_values(args: argparse.Namespace, fields: list[str]) -> dict[str, Any]:
    """The fields whose flag was given on the command line."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def valid_id(kind: str):
    """An argparse type that accepts only valid catalogue or SKU ids (they become keys and folders)."""

    def check(value: str) -> str:
        from product_studio.ingest import check_id

        try:
            return check_id(kind, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check
