"""The faces' forms of the run spec, generated from :class:`~collm_nas.core.RunConfig` and the registries.

* :func:`add_spec_arguments` adds the ``search`` flags of every field the CLI
  shows (name, type, choices, help, group) and :func:`spec_overrides` reads
  them back as RunConfig fields;
* :func:`studio_request_model` is the LangGraph Studio input form: the same
  fields, as a pydantic model;
* :func:`registry_choices` and :func:`registry_help` name what the
  registries hold (strategies, evaluators, spaces, fallbacks).

A new RunConfig field therefore appears on the command line, in Studio and
in the Python API at once.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from collm_nas.core import Registry, RunConfig, UserError, field_meta, fields_for


def _registry(name: str) -> tuple[Registry, str | None]:
    if name == "strategy":
        from collm_nas.agents import STRATEGIES

        return STRATEGIES, None
    if name == "fallback":
        from collm_nas.agents import FALLBACK, STRATEGIES

        return STRATEGIES, FALLBACK
    if name == "evaluator":
        from collm_nas.evaluators import EVALUATORS

        return EVALUATORS, None
    if name == "space":
        from collm_nas.spaces import SPACES

        return SPACES, None
    raise KeyError(name)


def registry_choices(name: str) -> list[str]:
    registry, tag = _registry(name)
    return registry.names(tag)


def registry_help(name: str) -> str:
    registry, tag = _registry(name)
    return registry.describe(tag)


# ------------------------------------------------------------------ types
def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside Optional[...], whether None is allowed)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _literal_values(tp: Any) -> list[str] | None:
    return [str(v) for v in get_args(tp)] if get_origin(tp) is Literal else None


def flag_of(name: str) -> str:
    return field_meta(name).get("flag") or "--" + name.replace("_", "-")


# ------------------------------------------------------------------- CLI
def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``search`` flags of every RunConfig field the CLI shows."""
    groups: dict[str, Any] = {}
    for name in fields_for("cli"):
        meta = field_meta(name)
        info = RunConfig.model_fields[name]
        tp, _ = _unwrap(info.annotation)
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        help_text = info.description or ""
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        if "registry" in meta:
            help_text += f": {registry_help(meta['registry'])}"
        default = info.get_default(call_default_factory=True)
        if default not in (None, [], {}) and name not in ("llm",):
            help_text += f" (default {str(default).replace('_', '-') if name == 'approval' else default})"
        origin = get_origin(tp)
        if origin in (list, dict):
            kwargs["action"] = "append"
        elif tp is int:
            kwargs["type"] = int
        elif tp is float:
            kwargs["type"] = float
        choices = meta.get("choices") or _literal_values(tp)
        if choices and "registry" not in meta:
            kwargs["choices"] = choices
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        target.add_argument(flag_of(name), help=help_text.replace("%", "%%"), **kwargs)


def spec_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields given on the command line (flags left out are not in the dict)."""
    out: dict[str, Any] = {}
    for name in fields_for("cli"):
        value = getattr(args, name, None)
        if value is None:
            continue
        tp, _ = _unwrap(RunConfig.model_fields[name].annotation)
        if get_origin(tp) is dict:
            value = _key_values(flag_of(name), value)
        out[name] = value
    return out


def _key_values(flag: str, items: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} '{item}' must be written KEY=VALUE, e.g. epochs=10")
        options[key.strip()] = value.strip()
    return options


# ---------------------------------------------------------------- Studio
def _list_fields(face: str) -> list[str]:
    """The list fields a face shows (a form may send each as one comma-separated string)."""
    return [n for n in fields_for(face)
            if get_origin(_unwrap(RunConfig.model_fields[n].annotation)[0]) is list]


def studio_request_model(once: Any, shared: tuple[str, ...] = ("strategy", "run_id")) -> type[BaseModel]:
    """The Studio input form: RunConfig's Studio fields, each ``Annotated[..., once]`` (a one-step channel)
    except ``shared`` ones (they share a channel with the graph state), plus ``run_id``.

    Registry fields are free text (a registered name or ``module:attribute``), the registered names given as
    ``examples``; defaults are the spec's.
    """
    fields: dict[str, Any] = {}
    for name in fields_for("studio"):
        info = RunConfig.model_fields[name]
        meta = field_meta(name)
        tp, optional = _unwrap(info.annotation)
        extra: dict[str, Any] = {}
        if "registry" in meta:
            extra["examples"] = registry_choices(meta["registry"])
        elif get_origin(tp) is Literal and meta.get("choices") and name == "llm":
            tp = Literal[tuple(meta["choices"])]  # type: ignore[valid-type]  (no "custom": that is the API's)
        annotated: Any = tp | None if optional else tp
        if name not in shared:
            annotated = typing.Annotated[annotated, once]
        if info.default_factory is not None:
            spec = Field(default_factory=info.default_factory, description=info.description,
                         json_schema_extra=extra or None)
        else:
            spec = Field(info.default, description=info.description, json_schema_extra=extra or None)
        fields[name] = (annotated, spec)
    fields["run_id"] = (str | None, Field(None, description="name of the new run (default: generated)"))

    def _dashes(cls: Any, value: Any) -> Any:
        return value.replace("-", "_") if isinstance(value, str) else value

    def _one_string(cls: Any, value: Any) -> Any:  # a form field may send "a, b" instead of a list
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    return create_model(
        "SearchRequest",
        __config__=ConfigDict(extra="forbid", title="Search request"),
        __validators__={"_dashes": field_validator("approval", mode="before")(_dashes),
                        "_one_string": field_validator(*_list_fields("studio"), mode="before")(_one_string)},
        **fields,
    )


def run_task(cfg: dict[str, Any]) -> str | None:
    """What a run searched, in a few words: the table's dataset, evaluator:dataset, or the evaluator."""
    from collm_nas.evaluators import EVALUATORS

    label = EVALUATORS.info(cfg.get("evaluator") or "", "label", "space")
    if label == "dataset":
        return cfg.get("dataset")
    if label == "space-dataset":
        return f"{cfg.get('evaluator')}:{cfg.get('dataset')}"
    return cfg.get("evaluator")
