"""The faces' forms of the run spec (collm_nas.faces): generated from RunConfig and the registries, read back
into the same spec, with one-line errors."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from collm_nas.core import RunConfig, UserError, fields_for
from collm_nas.faces import (add_spec_arguments, flag_of, registry_choices, registry_help, run_task,
                             spec_overrides, studio_request_model)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    add_spec_arguments(parser)
    return parser


def test_every_cli_field_becomes_a_flag_and_comes_back_as_the_same_field() -> None:
    parser = _parser()
    flags = {a.dest: a for a in parser._actions if a.dest in RunConfig.model_fields}
    assert set(flags) == set(fields_for("cli"))
    args = parser.parse_args(["--strategy", "rea", "--budget", "40", "--seed", "3", "--temperature", "0.2",
                              "--constraint", "params_mb<=1", "--constraint", "flops_m<=100",
                              "--train-option", "epochs=2", "--train-option", "lr = 0.1"])
    given = spec_overrides(args)
    assert given == {"strategy": "rea", "budget": 40, "seed": 3, "temperature": 0.2,
                     "constraints": ["params_mb<=1", "flops_m<=100"], "train_options": {"epochs": "2", "lr": "0.1"}}
    spec = RunConfig.model_validate(given)  # what the CLI hands the API
    assert spec.budget == 40 and spec.train_options == {"epochs": "2", "lr": "0.1"}
    assert spec_overrides(parser.parse_args([])) == {}  # flags left out stay out: the spec's defaults hold


def test_flags_carry_choices_types_and_the_registries_help() -> None:
    parser = _parser()
    by_dest = {a.dest: a for a in parser._actions}
    assert by_dest["budget"].type is int and by_dest["temperature"].type is float
    assert by_dest["decoding"].choices == ["auto", "grammar", "json_schema", "tools", "text"]
    assert by_dest["strategy"].choices is None  # a registry field also takes module:attribute
    assert "rea (regularized evolution)" in by_dest["strategy"].help and "module.path:attribute" in by_dest["strategy"].help
    assert flag_of("train_options") == "--train-option"
    with pytest.raises(SystemExit):
        parser.parse_args(["--decoding", "magic"])


def test_a_key_value_flag_without_equals_is_one_line() -> None:
    args = _parser().parse_args(["--train-option", "epochs"])
    with pytest.raises(UserError, match="--train-option 'epochs' must be written KEY=VALUE"):
        spec_overrides(args)


def test_registry_choices_and_help_name_what_is_registered() -> None:
    assert {"random", "rea", "local", "collm", "lmsearcher", "hybrid"} <= set(registry_choices("strategy"))
    assert "collm" not in registry_choices("fallback") and "lmsearcher" in registry_choices("fallback")
    assert {"table", "train", "supernet", "proxy"} <= set(registry_choices("evaluator"))
    assert registry_choices("space")[:2] == ["nb201", "mbv3"]
    assert "a .yaml/.json space file" in registry_help("space")
    with pytest.raises(KeyError):
        registry_choices("colour")


def test_the_studio_form_has_the_studio_fields_defaults_and_lenient_inputs() -> None:
    from langgraph.channels import EphemeralValue

    Form = studio_request_model(EphemeralValue(object))
    assert set(Form.model_fields) == set(fields_for("studio")) | {"run_id"}
    request = Form.model_validate({"strategy": "rea", "approval": "every-round", "constraints": "a<=1, b<=2"})
    assert request.approval == "every_round" and request.constraints == ["a<=1", "b<=2"]
    assert request.budget == RunConfig().budget
    schema = Form.model_json_schema()
    assert "rea" in schema["properties"]["strategy"]["examples"]
    with pytest.raises(ValidationError):
        Form.model_validate({"budegt": 5})  # a misspelt field is refused, not ignored


def test_run_task_says_what_a_run_searched() -> None:
    assert run_task({"evaluator": "table", "dataset": "cifar100"}) == "cifar100"
    assert run_task({"evaluator": "train", "dataset": "digits"}) == "train:digits"
    assert run_task({"evaluator": "mypkg.mod:score"}) == "mypkg.mod:score"
