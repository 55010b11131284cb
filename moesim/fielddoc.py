"""Markdown reference of every scenario field, generated from the pydantic models.

``python -m moesim.fielddoc > docs/scenario-fields.md`` regenerates the reference the README links.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from moesim.loader import _model_in
from moesim.schemas import Scenario, ServingWorkload, TrainingWorkload


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib._local.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("NoneType", "null")
    return text.replace("Annotated[int, Gt(gt=0)]", "int > 0").replace("Annotated[float, Gt(gt=0)]", "float > 0")


def _rows(cls: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, f in cls.model_fields.items():
        path = f"{prefix}{name}"
        default = "required" if f.default is PydanticUndefined else repr(f.default)
        sub = _model_in(f.annotation)
        if isinstance(f.default, BaseModel):
            default = "(defaults below)"
        rows.append((path, _type_name(f.annotation) if sub is None else "mapping", default, f.description or ""))
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
        out += [f"## {title}", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for path, typ, default, desc in _rows(cls, prefix):
            if cls is Scenario and path.startswith("workload."):
                continue
            out.append(f"| `{path}` | {typ.replace('|', '&#124;')} | {default.replace('|', '&#124;')} | {desc.replace('|', '&#124;')} |")
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

