"""Graph state, run configuration and runtime context.

The state is checkpointed after every step, so it holds only what one
round needs: the run's configuration, counters, the current strategy and
batch, and a best-so-far summary. Trials live in the trial store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field


class RunConfig(BaseModel):
    """Everything that defines a search; stored with the run and in its state."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field("nb201", description="built-in space name or path to a .yaml/.json space file")
    space_definition: dict[str, Any] | None = Field(
        None, description="snapshot of a user space file, so a resumed run sees the same space"
    )
    evaluator: str = Field("table", description="'table' (NAS-Bench-201 results), 'train' (real training), "
                           "'supernet' (weights inherited from a supernet), 'proxy' (zero-cost proxies) "
                           "or module.path:function")
    dataset: str | None = Field("cifar10", description="cifar10, cifar100 or imagenet16 (table evaluator); "
                                "digits, cifar10, cifar100, torchvision:NAME or imagefolder:PATH (train)")
    train_options: dict[str, Any] = Field(
        default_factory=dict, description="settings of the train, supernet or proxy evaluator (epochs, lr, "
        "channels, data_dir, ...)"
    )
    strategy: str = Field("rea", description="random, rea, local or collm")
    budget: int = Field(100, description="number of architectures to evaluate")
    seed: int = 0
    batch_size: int | None = Field(None, description="architectures per round (default: the strategy's)")
    constraints: list[str] = Field(default_factory=list, description="e.g. params_mb<=1.0")
    target: float | None = Field(None, description="stop once the searched metric reaches this value")
    metric: str | None = Field(None, description="searched metric (default: the dataset's)")
    mode: Literal["max", "min"] = "max"
    patience: int | None = Field(None, description="stop after this many rounds without improvement")
    llm: Literal["endpoint", "local", "custom", "none"] = Field(
        "none", description="where LLM roles run: a configured endpoint, the embedded local model, "
        "chat models passed to the API (custom), or none"
    )
    llm_options: dict[str, Any] = Field(
        default_factory=dict, description="role options given by flag or API (model, base_url...); never a key"
    )
    fallback: str = Field("local", description="LLM-free strategy that tops up short batches of an LLM strategy")
    prior: list[str] = Field(
        default_factory=list,
        description="warm start for the learned ranker: other runs' ids, or table:COLUMN of another dataset",
    )
    parent: dict[str, Any] | None = Field(
        None, description="the run and round this run was forked from (collm-nas fork)"
    )
    approval: Literal["never", "every_round", "over_cost"] = Field(
        "never", description="when a person approves a batch before it is evaluated: never, every round, or "
        "when the batch's estimated cost exceeds approval_threshold_s"
    )
    approval_threshold_s: float | None = Field(
        None, description="estimated evaluation seconds of a batch above which approval is asked (over_cost)"
    )
    backend: str = Field(
        "serial", description="where a batch is evaluated: serial (this process), process (a pool of worker "
        "processes, one GPU each where there are GPUs) or ray (Ray tasks); results are the same on all"
    )
    workers: int | None = Field(
        None, description="concurrent evaluations for process and ray (default: one per GPU, else per CPU core)"
    )


class SearchState(TypedDict, total=False):
    run_id: str
    config: dict[str, Any]  # RunConfig.model_dump()
    round: int
    evaluated: int
    best: dict[str, Any] | None  # {"ncode", "arch", "value", "reported"}
    strategy: dict[str, Any] | None  # Strategy.model_dump()
    memory: dict[str, Any]  # the Navigator's own memory
    proposals: list[str]
    batch: list[str]
    screening: dict[str, Any]
    feedback: dict[str, Any] | None  # the Coordinator's corrective follow-up for the generator
    llm_calls: list[dict[str, Any]]  # figures of this round's LLM calls (tokens, latency, mode)
    round_started: float
    stop_reason: str | None
    human_comment: str | None  # why a person rejected the last batch (for the next round's Navigator)


@dataclass
class SearchContext:
    """Runtime context: machine-specific places, not part of a run's identity."""

    db_path: str  # the store locator: the SQLite file, or a postgres:// URL (never put into state or logs)
    table_path: str | None = None  # nb201.csv.gz for the table evaluator
    llm: Any = None  # LLMRoles: the chat clients of this process (endpoints and keys stay out of state)


