"""User-defined search spaces from YAML or JSON files, validated by pydantic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collm_nas.core.errors import UserError
from collm_nas.spaces.constraints import parse_constraint
from collm_nas.core.space import NCODE_ALPHABET, Decision, SearchSpace

_Scalar = str | int | float | bool


class DecisionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    options: list[_Scalar] = Field(min_length=1, max_length=len(NCODE_ALPHABET))
    description: str = ""
    active_if: dict[str, list[_Scalar]] = Field(default_factory=dict)
    costs: dict[str, list[float]] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _distinct(cls, v: list[_Scalar]) -> list[_Scalar]:
        if len({str(o) for o in v}) != len(v):
            raise ValueError("options must be distinct")
        return v


class SpaceSpec(BaseModel):
    """The file format of a user space."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    decisions: list[DecisionSpec] = Field(min_length=1)
    base_costs: dict[str, float] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    # The space's trainable network: module.path:attribute of a collm_nas.models.NetworkFamily.
    network: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    # Codes that write one network: module.path:function of function(ncode) -> key (equal keys, one network).
    canonical: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

    @field_validator("constraints")
    @classmethod
    def _parse(cls, v: list[str]) -> list[str]:
        for text in v:
            try:
                parse_constraint(text)
            except UserError as e:
                raise ValueError(str(e)) from None
        return v

    def build(self) -> SearchSpace:
        return SearchSpace(
            name=self.name,
            description=self.description,
            decisions=[
                Decision(
                    name=d.name,
                    options=tuple(_text(o) for o in d.options),
                    description=d.description,
                    active_if={k: tuple(_text(o) for o in v) for k, v in d.active_if.items()},
                    costs={k: tuple(v) for k, v in d.costs.items()},
                )
                for d in self.decisions
            ],
            base_costs=self.base_costs,
            default_constraints=self.constraints,
            network=self.network,
            canonical_form=self.canonical,
        )


def _text(option: _Scalar) -> str:
    if isinstance(option, bool):
        return "true" if option else "false"
    return str(option)


def space_from_dict(data: Any, source: str = "space definition") -> SearchSpace:
    try:
        spec = SpaceSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise UserError(f"{source}: {where}: {err['msg']} (fix the file and try again)") from None
    return spec.build()


def load_space_file(path: str | Path) -> SearchSpace:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"space file '{p}' does not exist; give a .yaml, .yml or .json file or the name 'nb201'")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read space file '{p}': {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"space file '{p}' must hold a mapping with 'name' and 'decisions'")
    return space_from_dict(data, source=f"space file '{p}'")
