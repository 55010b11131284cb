"""Markdown reference of every scenario field, generated from the pydantic models.

``python -m moesim.fielddoc > docs/scenario-fields.md`` regenerates the reference the README links.
"""

from __future__ import annotations

import re

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from moesim.loader import model_in
from moesim.schemas import Scenario, ServingWorkload, TrainingWorkload
from moesim.schemas._base import MappingValues, bound_reason


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib._local.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "null")
    text = text.replace("Annotated[int, Gt(gt=0)]", "int > 0").replace("Annotated[float, Gt(gt=0)]", "float > 0")
    # a list of bounded numbers: the item's type (its bounds are in the range column's reason and the description)
    return re.sub(r"Annotated\[(int|float), (Gt\(gt=0\), )?FieldInfo\(.*?\]\)\]",
                  lambda m: m.group(1) + (" > 0" if m.group(2) else ""), text)


def _bound(value: float) -> str:
    """A bound as people write it: 1024, 0.001, 2^20, 2^63 - 1, 1e+16."""
    if abs(value) < 1e6 or value != int(value):
        return f"{value:g}"
    n = int(value)
    if n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    if (n + 1) & n == 0:
        return f"2^{n.bit_length()} - 1"
    return f"{value:g}"


def _range(f) -> str:
    """Allowed numeric range of a field (``ge``/``gt``/``le``/``lt`` and mapping-value bounds), with
    the reason for the upper bound; "" for non-numeric fields."""
    low = high = ""
    low_v = high_v = None  # the tightest bound on each side wins (PositiveFloat's > 0 beside a ge=0.001)
    for m in f.metadata:
        for attr, side in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is None:
                continue
            text = f"{side} {_bound(v)}"
            if side.startswith(">") and (low_v is None or v > low_v):
                low, low_v = text, v
            elif side.startswith("<") and (high_v is None or v < high_v):
                high, high_v = text, v
        if isinstance(m, MappingValues):
            low = f"values >= {_bound(m.ge)}" if m.ge is not None else low
            high = f"values <= {_bound(m.le)}" if m.le is not None else high
    why = bound_reason(f)
    text = ", ".join(x for x in (low, high) if x)
    return f"{text} ({why})" if why and text else text


def _rows(cls: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for name, f in cls.model_fields.items():
        path = f"{prefix}{name}"
        default = repr(f.default)
        if f.default is PydanticUndefined:
            default = "required" if f.default_factory is None else repr(f.default_factory())
        sub = model_in(f.annotation)
        if isinstance(f.default, BaseModel):
            default = "(defaults below)"
        rows.append((path, _type_name(f.annotation) if sub is None else "mapping", default, _range(f),
                     f.description or ""))
        if sub is not None:
            rows.extend(_rows(sub, path + "."))
    return rows


def markdown() -> str:
    """The reference as a Markdown document."""
    out = ["# Scenario fields", "",
           "Generated from the pydantic models by `python -m moesim.fielddoc`; the JSON Schema is "
           "`moesim schema`. Units are in the names (`_s`, `_gbps` = GB/s per direction, `_gib`, `_usd`).", ""]
    sections = [("Scenario", Scenario, ""), ("workload (kind: training)", TrainingWorkload, "workload."),
                ("workload (kind: serving)", ServingWorkload, "workload.")]
    for title, cls, prefix in sections:
        out += [f"## {title}", "", "| field | type | default | allowed range | meaning |", "|---|---|---|---|---|"]
        for path, *cells in _rows(cls, prefix):
            if cls is Scenario and path.startswith("workload."):
                continue
            out.append(f"| `{path}` | " + " | ".join(c.replace("|", "&#124;") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def all_field_paths() -> list[str]:
    """Every documented field path (used by the test that keeps the doc complete)."""
    paths = [r[0] for r in _rows(Scenario, "")]
    for cls in (TrainingWorkload, ServingWorkload):
        paths += [r[0] for r in _rows(cls, "workload.")]
    return paths


if __name__ == "__main__":  # pragma: no cover
    print(markdown())

