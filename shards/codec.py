"""JSON encoding of the core's typed results, for the ``idempotency_keys.result`` column.

Results are NamedTuples of plain values (UUIDs, str-enums, numbers, tuples, nested NamedTuples).
They are stored as readable JSON so an operator can inspect a recorded response with ``psql``,
and decoded back to the same types using the NamedTuples' own annotations: a replayed result is
indistinguishable from the first one. Only registered types are decoded, so a tampered row cannot
make the decoder build arbitrary objects (unlike pickle).
"""

from __future__ import annotations

import enum
import functools
import types
import typing
import uuid
from typing import Any, Union, get_args, get_origin

import orjson

TYPE_TAG = "_t"


class ResultCodec:
    def __init__(self, *types_: type) -> None:
        self.types = {cls.__name__: cls for cls in types_}

    def encode(self, value: Any) -> Any:
        """The JSON-ready structure of `value` (what a jsonb column stores)."""
        return self._encode(value)

    def decode(self, structure: Any) -> Any:
        return self._decode(structure)

    def dumps(self, value: Any) -> str:
        return orjson.dumps(self._encode(value)).decode()

    def loads(self, text: str | bytes) -> Any:
        return self._decode(orjson.loads(text))

    def _encode(self, value: Any) -> Any:
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            name = type(value).__name__
            if name not in self.types:
                raise TypeError(f"{name} is not a registered result type")
            encoded = {field: self._encode(item) for field, item in zip(value._fields, value, strict=True)}
            encoded[TYPE_TAG] = name
            return encoded
        if isinstance(value, tuple | list):
            return [self._encode(item) for item in value]
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, uuid.UUID):
            return str(value)
        return value

    def _decode(self, value: Any) -> Any:
        if isinstance(value, dict) and TYPE_TAG in value:
            cls = self.types[value[TYPE_TAG]]
            hints = _hints(cls)
            fields = {name: _coerce(hints.get(name, Any), self._decode(item))
                      for name, item in value.items() if name != TYPE_TAG}
            return cls(**fields)
        if isinstance(value, list):
            return tuple(self._decode(item) for item in value)
        return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(hint: Any, value: Any) -> Any:
    """Turn a decoded JSON value back into the annotated type (UUID, enum, tuple of those)."""
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            if option is type(None):
                continue
            try:
                return _coerce(option, value)
            except (ValueError, TypeError):
                continue
        return value
    if origin is tuple:
        args = get_args(hint)
        item_hint = args[0] if args else Any
        return tuple(_coerce(item_hint, item) for item in value)
    if hint is uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value


def core_result_codec() -> ResultCodec:
    """The codec of every result type the core records with an idempotency key."""
    from actors.inventory.results import (
        EventStatusView,
        HoldItem,
        HoldView,
        OrderView,
        Rejection,
        TicketView,
        TransferView,
    )

    return ResultCodec(HoldView, HoldItem, OrderView, TicketView, TransferView, EventStatusView, Rejection)
