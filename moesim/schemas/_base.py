"""Shared pydantic base: frozen models that reject unknown keys; bounded numeric fields."""

from __future__ import annotations

from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PositiveFloat,
    PositiveInt,
    model_validator,
)
from pydantic_core import PydanticUndefined

#: Longest string any scenario field accepts (names, descriptions, paths are far shorter).
MAX_STRING_CHARS = 4096
#: Shared bounds (the reasons are at the fields that use them).
MAX_LAYERS = 1024  # 8x the deepest published LLM (Megatron 1T and PaLM: 118-128 blocks)
MAX_WIDTH = 1 << 20  # 1,048,576: ~40x the widest published hidden size (PaLM 540B: 18432)
MAX_FFN = 1 << 22  # 4x MAX_WIDTH, the usual FFN expansion
MAX_TOKENS = 1 << 24  # 16,777,216 tokens: above the longest published context (10M, Llama 4 Scout)
MAX_EXPERTS = 1 << 20  # PEER (He 2024, "Mixture of a Million Experts") uses 1024^2 = 2^20 experts
#: Key of a field's JSON Schema entry that says why its upper bound is what it is.
BOUND_REASON = "bound_reason"



@dataclass(frozen=True)
class MappingValues:
    """Field metadata bounding every value of a ``dict[str, float]`` field (validation and the JSON
    Schema's ``additionalProperties``), leaving the field's type, and so its docs, as written."""

    ge: float | None = None
    le: float | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        schema = handler(source)
        values = schema["values_schema"]
        if values.get("type") not in ("float", "int"):
            raise TypeError(f"MappingValues bounds dict[str, float | int] fields, not {source}")
        values.update({k: v for k, v in (("ge", self.ge), ("le", self.le)) if v is not None})
        return schema


#: Dense peak TFLOP/s per dtype (``hardware.device.peak_tflops``); >= 1 MFLOP/s keeps every time finite.
PeakTFLOPsTable = Annotated[dict[str, PositiveFloat], MappingValues(ge=1e-6, le=1e6)]
PEAK_TFLOPS_WHY = "1 EFLOP/s per device: 8x a whole wafer-scale engine (WSE-3: 125 PFLOP/s); an H100 does ~2000"
#: Bits one stored weight takes per dtype, quantization scales included (``hardware.device.weight_bits``).
WeightBitsTable = Annotated[dict[str, PositiveFloat], MappingValues(le=32)]
BITS_PER_WEIGHT_WHY = "a quantized weight takes fewer bits than fp32's 32"
#: Measured ring bus bandwidth (GB/s) per group size of a node's devices (``hardware.node.ring_busbw_gbps``).
RingBusbwTable = Annotated[dict[PositiveInt, PositiveFloat], MappingValues(ge=1e-3, le=1e6)]
RING_BUSBW_WHY = "1 PB/s per device: ~1000x NVLink 5 (900 GB/s per direction); a PCIe 5.0 ring of 8 GPUs measures ~28"


#: Why a number field refuses ``true`` / ``false`` (the scenario sections and the sweep's value check).
NOT_A_BOOLEAN = "a number is expected, not a boolean"

#: Largest seed (results tables store seeds as signed 64-bit integers), and the check every seed option
#: shares with ``routing.seed``.
MAX_SEED = 2**63 - 1
SEED_WHY = "seeds are stored as signed 64-bit integers in results tables"


def check_seed(seed: int, option: str) -> int:
    """``seed`` if it is a whole number in 0..MAX_SEED, else a one-line InputError naming ``option``."""
    from moesim.errors import InputError

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"{option} {seed!r}: a seed is a whole number from 0 to {MAX_SEED} ({SEED_WHY})")
    return seed


class Strict(BaseModel):
    """Base of every scenario section: immutable, unknown keys are an error, and a number field
    refuses a boolean (pydantic's lax mode would read ``true`` as 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False,
                              str_max_length=MAX_STRING_CHARS)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(value, bool) else None
                if field is not None and number_not_bool(field.annotation):
                    raise ValueError(f"{name} = {str(value).lower()}: {NOT_A_BOOLEAN}")
        return data

    def validated_copy(self, **changes: Any) -> Strict:
        """A copy with ``changes`` applied and checked by this section's own rules, which ``model_copy``
        skips (e.g. an interleaved schedule's micro-batches against a changed ``pp``). Raises pydantic's
        ``ValidationError`` when they break one (``loader.format_validation_error`` makes it one line)."""
        return type(self).model_validate({**self.model_dump(), **changes})


def number_not_bool(annotation: Any) -> bool:
    """Whether a field's type takes numbers but not booleans (through Annotated, Optional, unions and
    Literal values)."""
    kinds: set[type] = set()

    def walk(t: Any) -> None:
        origin = get_origin(t)
        if origin is Annotated:
            walk(get_args(t)[0])
        elif origin in (Union, UnionType):
            for a in get_args(t):
                walk(a)
        elif origin is Literal:
            kinds.update(type(v) for v in get_args(t))
        elif isinstance(t, type):
            kinds.add(t)

    walk(annotation)
    return bool not in kinds and bool(kinds & {int, float})


def bounded(default: Any = PydanticUndefined, *, why: str, **kwargs: Any) -> Any:
    """``Field(...)`` with an upper bound (``le=``/``lt=`` in ``kwargs``) and the reason for it.

    The reason goes into the JSON Schema (``bound_reason``, beside ``maximum``) and the loader
    appends it to the one-line error when a value is over the bound. Every numeric scenario field
    has one (tests/test_bounds.py), so no value can reach int64 or float overflow downstream.
    """
    if "le" not in kwargs and "lt" not in kwargs:
        raise TypeError("bounded() needs le= or lt=")
    return Field(default, json_schema_extra={BOUND_REASON: why}, **kwargs)


def bound_reason(field: Any) -> str | None:
    """The reason a FieldInfo's upper bound was chosen, or None."""
    extra = getattr(field, "json_schema_extra", None)
    return extra.get(BOUND_REASON) if isinstance(extra, dict) else None
