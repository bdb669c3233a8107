"""The run spec: :class:`RunConfig` is the only schema of a search.

It is stored with the run and read back on resume, fork, show and in the
dashboard. The faces are generated from it: the CLI's ``search`` flags
(``collm_nas.faces.cli_spec``), the LangGraph Studio input form
(``collm_nas.studio``) and the Python API's keyword arguments
(``Workspace.search(config, **overrides)``), so a new field appears in all
three at once. Each field says how the faces show it through
:func:`spec_field` (help text, flag name, choices or the registry its value
comes from, which faces show it, the CLI group).

A few fields are *resolved* when a run is prepared (``engine.prepare_run``):
``dataset`` (the evaluator's default), ``backend`` and ``workers`` (the
settings), ``llm`` (``auto`` becomes what this machine has), ``metric``,
``mode``, ``reported_metric`` and ``metric_note`` (the evaluator's), and
``space_definition`` (a snapshot of a space file). The stored config is the
resolved one, so reading a run never needs its evaluator.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FACES_ALL = ("cli", "studio", "api")


def spec_field(default: Any = None, help: str = "", *, flag: str | None = None, metavar: str | None = None,
               registry: str | None = None, choices: tuple[str, ...] | None = None,
               faces: tuple[str, ...] = FACES_ALL, group: str | None = None, repeat: bool = False,
               default_factory: Any = None, **constraints: Any) -> Any:
    """A :class:`RunConfig` field with what the faces need to show it.

    ``registry`` names the registry whose entries are the field's choices
    (``strategy``, ``evaluator``, ``space``, ``fallback``); ``choices`` fixes
    them (a Literal's values by default); ``repeat`` makes a list field a
    repeatable flag; ``faces`` lists where the field appears (an empty tuple:
    resolved or internal, never asked for).
    """
    extra: dict[str, Any] = {"faces": list(faces)}
    for key, value in (("flag", flag), ("metavar", metavar), ("registry", registry), ("group", group)):
        if value is not None:
            extra[key] = value
    if choices is not None:
        extra["choices"] = list(choices)
    if repeat:
        extra["repeat"] = True
    if default_factory is not None:
        return Field(default_factory=default_factory, description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def field_meta(name: str) -> dict[str, Any]:
    """The face metadata of a :class:`RunConfig` field."""
    extra = RunConfig.model_fields[name].json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


LLM = "LLM strategies (collm, lmsearcher, hybrid)"
TRAIN = "real training (--evaluator train, supernet or proxy)"
PARALLEL = "parallel evaluation (stored with the run; resume uses it)"
APPROVAL = "approval (a person approves each batch before it is evaluated)"


# Defaults of fields added after runs were stored with the behaviour of another value (RunConfig.from_stored).
STORED_BEFORE: dict[str, Any] = {"ranker_pool": "subspace"}


class RunConfig(BaseModel):
    """Everything that defines a search; stored with the run."""

    model_config = ConfigDict(extra="forbid")

    space: str = spec_field("nb201", "search space: a registered name or a .yaml/.json space file", registry="space")
    space_definition: dict[str, Any] | None = spec_field(
        None, "snapshot of a user space file, so a resumed run sees the same space", faces=())
    evaluator: str = spec_field(
        "table", "what a trial costs and returns: a registered evaluator or module.path:function",
        registry="evaluator")
    dataset: str | None = spec_field(
        None, "table: cifar10 (default, searched on validation), cifar100, imagenet16 or fashion-mnist (the "
        "project's own table); train, supernet, proxy: digits (default), cifar10, cifar100 (python folders under "
        "--data-dir), fashion-mnist (Debian's dataset-fashion-mnist or --data-dir), idx:PATH (MNIST-format "
        "files), torchvision:NAME or imagefolder:PATH")
    strategy: str = spec_field("rea", "search strategy: a registered name or module.path:attribute",
                               registry="strategy")
    budget: int = spec_field(100, "number of architectures to evaluate")
    seed: int = spec_field(0, "random seed of the run (strategies and evaluations)")
    batch_size: int | None = spec_field(None, "architectures per round (default: the strategy's)")
    constraints: list[str] = spec_field(
        help="resource constraint such as params_mb<=1.0, flops_m<=100, lat_ms_pixel3<=20 (repeatable)",
        flag="--constraint", metavar="EXPR", repeat=True, default_factory=list)
    target: float | None = spec_field(None, "stop once the searched metric reaches this value")
    patience: int | None = spec_field(None, "stop after this many rounds without improvement (rejected rounds "
                                            "do not count)")
    objectives: list[str] = spec_field(
        help="objective NAME:max|min, repeatable: two or three search a Pareto front (e.g. cifar10_valid:max and "
        "lat_ms_pixel3:min); NAME is any metric the evaluator returns; one is the same as --metric/--mode",
        flag="--objective", metavar="NAME:max|min", repeat=True, default_factory=list)
    hv_reference: list[float] | None = spec_field(
        None, "reference point of the hypervolume, one value per objective in its own units (default: each "
        "objective's worst value among the run's trials, moved a tenth of its range further)",
        flag="--hv-ref", metavar="V1,V2[,V3]")
    same_networks: Literal["skip", "evaluate"] = spec_field(
        "skip", "codes that write one network (NB201: isomorphic cells and dead edges; a space file's "
        "canonical:): skip (each network is evaluated once, its other codes are screened out and named) or "
        "evaluate (every code on its own)")
    metric: str | None = spec_field(None, "searched metric (default: the evaluator's, e.g. cifar10_valid)")
    mode: Literal["max", "min"] = spec_field("max", "maximise or minimise the metric (user evaluators)")
    reported_metric: str | None = spec_field(None, "the metric results are quoted in (resolved)", faces=())
    metric_note: str | None = spec_field(None, "how the searched and reported metrics relate (resolved)",
                                         faces=())
    prior: list[str] = spec_field(
        help="warm-start the learned ranker from another run's id, another dataset's table column (e.g. "
        "table:cifar100_test), a zero-cost proxy of every network of the space (proxy:naswot; nb201, computed "
        "once per machine) or the run's LLM's own knowledge (llm: asked once which of each two options of a "
        "decision is better; lmsearcher with an LLM); never the target's own results",
        metavar="RUN_ID|table:COLUMN|proxy:NAME|llm",
        repeat=True,
        default_factory=list)
    train_options: dict[str, Any] = spec_field(
        help="evaluator setting, repeatable: epochs, batch_size, lr, channels, cells, device, threads, ... "
        "(train: TrainConfig; supernet: SupernetConfig; proxy: proxy=synflow|naswot|grad_norm, ...)",
        flag="--train-option", metavar="KEY=VALUE", repeat=True, group=TRAIN, default_factory=dict)
    # -- LLM roles
    llm: Literal["auto", "endpoint", "local", "none", "custom"] = spec_field(
        "auto", "where LLM roles run: auto (a configured endpoint, else the local model, else none), endpoint "
        "(COLLM_NAS_LLM_BASE_URL), local (embedded SmolLM2), none (the LLM-free fallback)",
        choices=("auto", "endpoint", "local", "none"), group=LLM)
    llm_base_url: str | None = spec_field(
        None, "OpenAI-compatible endpoint for every role (default COLLM_NAS_LLM_BASE_URL); keys come from the "
        "environment only", metavar="URL", group=LLM)
    llm_model: str | None = spec_field(None, "model name for every role (default COLLM_NAS_LLM_MODEL)",
                                       metavar="MODEL", group=LLM)
    navigator_model: str | None = spec_field(None, "model of the Navigator only", metavar="MODEL", group=LLM)
    generator_model: str | None = spec_field(None, "model of the Generator only", metavar="MODEL", group=LLM)
    temperature: float | None = spec_field(None, "sampling temperature for every role", group=LLM, ge=0, le=2)
    decoding: Literal["auto", "grammar", "json_schema", "tools", "text"] | None = spec_field(
        None, "structured-output mode (default auto: grammar for llama.cpp, JSON schema for vLLM, else tools)",
        group=LLM)
    tool_rounds: int = spec_field(
        3, "tool rounds an LLM role may take per turn (decode_ncode, check_ncodes, lookup_trials, rank_pool) "
        "before it must answer; 0 turns tools off; only where the endpoint does tool calling", group=LLM, ge=0,
        le=10)
    navigate_every: int = spec_field(
        1, "the Navigator writes a new strategy every N rounds; in between, the Generator works from the latest "
        "one (fewer calls for a slow local model; a person's rejection or a fallback round always brings a new "
        "strategy)", group=LLM, ge=1, le=20, metavar="N")
    ranker_pool: Literal["learned", "subspace", "none"] = spec_field(
        "learned", "lmsearcher with an LLM: the pools the LLM ranks: learned (the learned ranker's best unseen "
        "candidates, shown in a shuffled order), subspace (LM-Searcher's own pruning-based subspace samples) or "
        "none (the LLM ranks nothing and the learned ranker picks every round: with --prior llm, the model's "
        "knowledge is its prior)", group=LLM)
    ranker_pool_size: int | None = spec_field(
        None, "candidates in each pool the LLM ranks (default: 10 for subspace pools, 5 for learned ones)",
        group=LLM, ge=2, le=50, metavar="N")
    ranker_scoring: Literal["pick", "logprob"] = spec_field(
        "pick", "how the LLM ranker chooses from a pool: pick (the model writes the code it chooses) or logprob "
        "(the pool shown as lettered options; each candidate scored by the model's probability of its letter, "
        "averaged over orders that put it in every place: one output token a call, position "
        "bias averaged out; needs an endpoint that returns log-probabilities, as llama.cpp does)", group=LLM)
    ranker_orders: int | None = spec_field(
        None, "logprob scoring: the orders each pool is asked in (default: one per candidate, so that each stands "
        "once in every place; fewer are cheaper, and leave some candidates never first)", group=LLM, ge=1, le=50,
        metavar="N")
    llm_options: dict[str, Any] = spec_field(
        help="further role options by API: {'generator.temperature': 0.2, ...} (never a key)", faces=("api",),
        default_factory=dict)
    fallback: str = spec_field(
        "local", "LLM-free strategy that tops up short batches and stands in when the LLM fails",
        registry="fallback", group=LLM)
    # -- approval
    approval: Literal["never", "every_round", "over_cost"] = spec_field(
        "never", "when to pause for a person's approval of a batch: never, every round, or over cost (the "
        "batch's estimated seconds exceed approval_threshold_s)", choices=("never", "every-round", "over-cost"),
        group=APPROVAL)
    approval_threshold_s: float | None = spec_field(
        None, "over-cost: pause when a batch's estimated evaluation seconds exceed this", flag="--approval-threshold",
        metavar="SECONDS", group=APPROVAL, ge=0)
    # -- where batches run
    backend: Literal["serial", "process", "ray"] | None = spec_field(
        None, "serial (this process), process (worker processes, one GPU each where there are GPUs) or ray "
        "(Ray tasks); results are the same on all (default: $COLLM_NAS_BACKEND or serial)", group=PARALLEL)
    workers: int | None = spec_field(
        None, "concurrent evaluations for process and ray (default: $COLLM_NAS_WORKERS, else one per GPU, else "
        "one per CPU core)", metavar="N", group=PARALLEL, ge=1)
    parent: dict[str, Any] | None = spec_field(None, "the run and round this run was forked from", faces=())

    @model_validator(mode="before")
    @classmethod
    def _older_configs(cls, data: Any) -> Any:
        """Configs stored by earlier versions: LLM flags kept in llm_options."""
        if isinstance(data, dict) and isinstance(data.get("llm_options"), dict):
            options = dict(data["llm_options"])
            moved = {"base_url": "llm_base_url", "model": "llm_model", "navigator.model": "navigator_model",
                     "generator.model": "generator_model", "temperature": "temperature", "decoding": "decoding"}
            data = dict(data)
            for old, new in moved.items():
                if old in options and data.get(new) is None:
                    data[new] = options.pop(old)
            data["llm_options"] = options
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> "RunConfig":
        """A run's stored config. A field the run was stored without keeps the behaviour the run started with,
        where its default has changed since: ``ranker_pool`` was LM-Searcher's subspace pools before it existed."""
        return cls.model_validate({**STORED_BEFORE, **data})

    @field_validator("approval", mode="before")
    @classmethod
    def _dashes(cls, value: Any) -> Any:
        return value.replace("-", "_") if isinstance(value, str) else value

    @field_validator("hv_reference", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:  # "--hv-ref 90,20" (once or repeated) or a form's "90, 20"
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() if isinstance(part, str) else part for item in value
                    for part in (item.split(",") if isinstance(item, str) else [item])
                    if not isinstance(part, str) or part.strip()]
        return value

    @field_validator("constraints", "prior", "objectives", mode="before")
    @classmethod
    def _one_string(cls, value: Any) -> Any:  # a form field may send "a, b" instead of a list
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def role_options(self) -> dict[str, Any]:
        """The LLM roles' options (``model``, ``navigator.model``, ...) from the flags and ``llm_options``."""
        flat = {"base_url": self.llm_base_url, "model": self.llm_model, "navigator.model": self.navigator_model,
                "generator.model": self.generator_model, "temperature": self.temperature,
                "decoding": self.decoding}
        return {**{k: v for k, v in flat.items() if v is not None}, **self.llm_options}



def fields_for(face: str) -> list[str]:
    """Names of the :class:`RunConfig` fields a face (``cli``, ``studio``, ``api``) shows, in order."""
    return [name for name in RunConfig.model_fields if face in field_meta(name).get("faces", ())]
