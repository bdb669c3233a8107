"""`collm-nas finetune`: the compact samples, their checks, the GGUF export, and (marked local_llm) a real
tiny fine-tune of SmolLM2 on CPU that is killed, resumed, and then ranks through the llama.cpp server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAIServer, Reply

from collm_nas import Workspace
from collm_nas.llm.chat_models import RetryPolicy, RoleModelConfig
from collm_nas.finetune.train import FinetuneOptions, choose, resolve_base, signature
from collm_nas.finetune.data import load_samples
from collm_nas.agents.ranker import LLMRanker, history_lines
from collm_nas.llm.structured import StructuredChat
from collm_nas.llm.model_files import find_model
from collm_nas.cli import main
from collm_nas.core import Trial, UserError
from collm_nas.spaces import SPACES
from collm_nas.tools.grammar import pick_code_gbnf
from collm_nas.trajectories import export_trajectories

ROOT = Path(__file__).resolve().parents[1]
POOL = ["123412", "333333", "204130"]
TRIALS = [Trial(seq=i, ncode=c, arch=c, round=i, status="ok", value=v)
          for i, (c, v) in enumerate([("111111", 80.0), ("222222", 90.0), ("444444", 70.0)])]


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory, table_path: str) -> Path:
    """Compact samples of two short real searches on the table (a few seconds)."""
    folder = tmp_path_factory.mktemp("ft")
    ws = Workspace(folder / "runs", table_path=table_path)
    for seed, strategy in ((0, "random"), (1, "rea")):
        ws.search(run_id=f"r{seed}", dataset="cifar10", strategy=strategy, budget=20, seed=seed, llm="none")
    out = folder / "samples.jsonl"
    assert export_trajectories([ws.run("r0"), ws.run("r1")], out, stride=3) == 10
    return out


# ------------------------------------------------------------------ the compact format
def test_compact_samples_are_short_and_answer_with_the_bare_true_best(samples_file: Path, table_path: str) -> None:
    from collm_nas.evaluators.nb201_table import load_table

    table = load_table(table_path)
    for line in samples_file.read_text().splitlines():
        s = json.loads(line)
        truth = max(s["pool"], key=lambda c: table.value(c, "cifar10_valid"))
        assert s["answer"] == truth and s["messages"][-1] == {"role": "assistant", "content": truth}
        user = s["messages"][1]["content"]
        assert user.startswith("space nb201 (6 digits)") and all(code in user for code in s["pool"])
        history = user.split("\npool:\n")[0].splitlines()[2:]
        assert 1 <= len(history) <= 10 and all(len(h.split("|")[1]) == 2 for h in history)
        assert len(s["messages"][0]["content"]) + len(user) < 800  # the full style's prompt is ~2,500 characters
        assert s["meta"]["style"] == "compact" and s["meta"]["code_length"] == 6


def test_history_scores_two_digits_best_first() -> None:
    assert history_lines(TRIALS, "max", two_digits=True).splitlines() == ["222222|99", "111111|50", "444444|00"]
    assert history_lines(TRIALS, "min", two_digits=True).splitlines()[0] == "444444|99"


def test_bare_code_grammar_admits_exactly_the_pool() -> None:
    grammar = pick_code_gbnf(POOL)
    assert grammar.startswith("root ::= code-s0-0\n") and '"\\""' not in grammar
    assert pick_code_gbnf(["01", "112"]) == 'root ::= "01" | "112"\n'


def test_compact_ranker_sends_the_bare_code_grammar_and_reads_a_bare_answer() -> None:
    space = SPACES.resolve("nb201")
    fast = RetryPolicy(max_attempts=1, initial_wait_s=0.0, max_wait_s=0.0, max_total_s=5.0, jitter_s=0.0)
    with FakeOpenAIServer([Reply.text("204130")], owned_by="llamacpp") as server:
        chat = StructuredChat(RoleModelConfig(role="ranker", base_url=server.base_url, model="m", timeout_s=5,
                                              retry=fast, decoding="grammar"))
        out = LLMRanker(style="compact").pick(chat, space, TRIALS, POOL)
        body = server.chat_bodies[0]
    assert out.code == "204130" and body["grammar"] == pick_code_gbnf(POOL)
    assert body["messages"][1]["content"].startswith("space nb201 (6 digits)")


# ------------------------------------------------------------------ bad data: one line, exit 2
def _finetune_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["finetune", *args])
    err = capsys.readouterr().err
    return code, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("collm-nas: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("content, expected", [
    ("", "is empty"),
    ("\n  \n", "is empty"),
    ("not json\n", "not JSON"),
    ('{"messages": [], "pool": {}}\n', "missing field(s) 'answer'"),
    ('[1, 2]\n', "must be a JSON object"),
    ('{"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "5"}], "answer": 5, '
     '"pool": {"5": 1, "6": 2}}\n', "'answer' must be a non-empty code string"),
    ('{"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "5"}], "answer": "5", '
     '"pool": ["5", "6"]}\n', "'pool' must be an object {code: value}"),
    ('{"messages": [{"role": "user", "content": "?"}, {"role": "bot", "content": "5"}], "answer": "5", '
     '"pool": {"5": 1, "6": 2}}\n', "has role 'bot'"),
])
def test_bad_data_files_get_one_line_and_exit_2(tmp_path: Path, capsys, content: str, expected: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    code, err = _finetune_cli(capsys, "--data", str(bad), "--out", str(tmp_path / "out"))
    line = _one_line_error(err)
    assert code == 2 and expected in line and str(bad) in line and "export-trajectories" in line
    assert not (tmp_path / "out").exists()  # nothing loaded, nothing written


def test_a_code_of_the_wrong_length_is_named_with_its_line(samples_file: Path, tmp_path: Path, capsys) -> None:
    lines = samples_file.read_text().splitlines()
    broken = json.loads(lines[2])
    code = next(c for c in broken["pool"] if c != broken["answer"])
    broken["pool"][code[:4]] = broken["pool"].pop(code)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(broken)]) + "\n")
    exit_code, err = _finetune_cli(capsys, "--data", str(bad), "--out", str(tmp_path / "out"))
    line = _one_line_error(err)
    assert exit_code == 2 and f"{bad}:3" in line and f"'{code[:4]}' has 4 characters" in line


def test_an_answer_outside_the_pool_or_not_in_the_reply_is_refused(samples_file: Path, tmp_path: Path) -> None:
    s = json.loads(samples_file.read_text().splitlines()[0])
    outside = dict(s, answer="000000", messages=s["messages"][:-1] + [{"role": "assistant", "content": "000000"}])
    other = next(c for c in s["pool"] if c != s["answer"])
    unsaid = dict(s, messages=s["messages"][:-1] + [{"role": "assistant", "content": other}])
    for sample, expected in ((outside, "not one of the pool's codes"), (unsaid, "does not give the answer")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(sample) + "\n")
        with pytest.raises(UserError, match=expected):
            load_samples([bad])


def test_missing_files_unknown_runs_and_bad_options_exit_2(tmp_path: Path, capsys, samples_file: Path) -> None:
    code, err = _finetune_cli(capsys, "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert code == 2 and "not found" in _one_line_error(err)
    code, err = _finetune_cli(capsys, "--out", str(tmp_path / "o"))
    assert code == 2 and "nothing to train on" in _one_line_error(err)
    code, err = _finetune_cli(capsys, "--data", str(samples_file), "--out", str(tmp_path / "o"), "--epochs", "0")
    assert code == 2 and "--epochs" in _one_line_error(err)
    code, err = _finetune_cli(capsys, "--data", str(samples_file), "--out", str(tmp_path / "o"),
                              "--base", str(tmp_path))
    assert code == 2 and "--base" in _one_line_error(err)


# ------------------------------------------------------------------ split, signature, model folders
def test_the_split_keeps_runs_whole_and_repeats_under_a_seed(samples_file: Path) -> None:
    samples = load_samples([samples_file])
    options = FinetuneOptions(holdout=0.5, seed=3)
    train, held = choose(samples, options)
    assert len(train) + len(held) == 10 and train and held
    assert not {s.group for s in train} & {s.group for s in held}
    assert (train, held) == choose(samples, FinetuneOptions(holdout=0.5, seed=3))
    assert len(choose(samples, FinetuneOptions(max_samples=4, holdout=0))[0]) == 4


def test_base_models_are_gguf_files_folders_with_one_or_hf_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.gguf").write_bytes(b"GGUF")
    assert resolve_base(tmp_path / "a").gguf_file == "m.gguf"
    assert resolve_base(tmp_path / "a" / "m.gguf").gguf_path == tmp_path / "a" / "m.gguf"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    hf = resolve_base(tmp_path / "hf")
    assert hf.gguf_file is None and hf.load_kwargs() == {}
    (tmp_path / "a" / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match="--base"):
        resolve_base(tmp_path / "a")


def test_the_checkpoint_signature_follows_data_and_shaping_options(samples_file: Path, tmp_path: Path) -> None:
    from collm_nas.finetune.train import Base

    samples = load_samples([samples_file])
    base = Base(tmp_path, "m.gguf", "local")
    one = signature(samples[:5], samples[5:], base, FinetuneOptions())
    assert one == signature(samples[:5], samples[5:], base, FinetuneOptions(threads=3, save_every=1))
    assert one != signature(samples[:5], samples[5:], base, FinetuneOptions(lr=1e-3))
    assert one != signature(samples[:4], samples[5:], base, FinetuneOptions())


def test_llm_model_must_name_a_tuned_folder_or_a_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="collm-nas finetune --out"):
        find_model(tmp_path)
    (tmp_path / "ranker.json").write_text('{"kind": "something else"}')
    with pytest.raises(UserError, match="not a collm-nas tuned-ranker manifest"):
        find_model(tmp_path)
    (tmp_path / "ranker.json").write_text('{"kind": "collm-nas tuned ranker", "gguf": "ranker.gguf"}')
    with pytest.raises(UserError, match="its model file ranker.gguf is missing"):
        find_model(tmp_path)
    (tmp_path / "ranker.gguf").write_bytes(b"GGUF")
    found = find_model(tmp_path)
    assert found.style == "compact" and found.temperature == 0.0 and found.gguf_path == tmp_path / "ranker.gguf"
    plain = find_model(tmp_path / "ranker.gguf")
    assert plain.style == "full" and plain.temperature is None


# ------------------------------------------------------------------ GGUF export
def test_gguf_export_adds_permuted_updates_and_copies_the_rest(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from collm_nas.finetune.gguf_export import export_merged_gguf, llama_permute

    rng = np.random.default_rng(0)
    q = rng.standard_normal((64, 64)).astype(np.float32)
    v = rng.standard_normal((32, 64)).astype(np.float32)
    norm = rng.standard_normal(64).astype(np.float32)
    base = tmp_path / "base.gguf"
    w = gguf.GGUFWriter(str(base), arch="llama")
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_string("tokenizer.chat_template", "{{ messages }}")
    w.add_tensor("blk.0.attn_q.weight", q.astype(np.float16))
    w.add_tensor("blk.0.attn_v.weight", v.astype(np.float16))
    w.add_tensor("blk.0.attn_norm.weight", norm)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    dq = rng.standard_normal((64, 64)).astype(np.float32) * 0.01
    dv = rng.standard_normal((32, 64)).astype(np.float32) * 0.01
    out = tmp_path / "out.gguf"
    counts = export_merged_gguf(base, {"model.layers.0.self_attn.q_proj.weight": dq,
                                       "model.layers.0.self_attn.v_proj.weight": dv}, out, qtype="f16")
    assert counts == {"updated": 2, "copied": 1}
    r = gguf.GGUFReader(str(out))
    tensors = {t.name: t for t in r.tensors}
    got_q = np.asarray(tensors["blk.0.attn_q.weight"].data, dtype=np.float32)
    assert np.allclose(got_q, q.astype(np.float16).astype(np.float32) + llama_permute(dq, 4), atol=2e-3)
    assert not np.allclose(got_q, q.astype(np.float16).astype(np.float32) + dq, atol=2e-3)  # the permutation matters
    got_v = np.asarray(tensors["blk.0.attn_v.weight"].data, dtype=np.float32)
    assert np.allclose(got_v, v.astype(np.float16).astype(np.float32) + dv, atol=2e-3)
    assert np.array_equal(np.asarray(tensors["blk.0.attn_norm.weight"].data), norm)
    assert r.fields["tokenizer.chat_template"].contents() == "{{ messages }}"
    with pytest.raises(UserError, match="no GGUF tensor"):
        export_merged_gguf(base, {"model.embed_unknown.weight": dv}, tmp_path / "x.gguf")


# ------------------------------------------------------------------ a tiny random base: real training in seconds
# A 2-layer Llama with random weights and a character-level ChatML tokenizer, built offline from a config and
# saved as a Hugging Face folder: `--base PATH` with a real causal LM, so that seeding, resuming and the
# merged output are tested on real optimiser steps in the default suite (a fine-tune takes a few seconds).
TINY = {"epochs": 2, "batch_size": 2, "lr": 5e-2, "holdout": 0.3, "save_every": 2}
TINY_CLI = ["--epochs", "2", "--batch-size", "2", "--lr", "5e-2", "--holdout", "0.3", "--save-every", "2",
            "--no-progress"]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    import string

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # one token a character
    backend.decoder = decoders.Fuse()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<unk>",
        pad_token="<|endoftext|>", chat_template=CHATML)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base")
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _tiny_finetune(samples_file: Path, out: Path, base: Path, seed: int = 0):
    from collm_nas.finetune.train import finetune

    return finetune(load_samples([samples_file]), out, base=base, options=FinetuneOptions(seed=seed, **TINY),
                    progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def tiny_reference(tiny_base: Path, samples_file: Path, tmp_path_factory):
    """An uninterrupted tiny fine-tune, seed 0: 5 training samples, 3 steps an epoch, 6 steps, 5 held-out pools."""
    return _tiny_finetune(samples_file, tmp_path_factory.mktemp("tiny") / "seed0", tiny_base)


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def _same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _figures(manifest: dict) -> list[dict]:
    """The held-out figures of every epoch, without the pick timing."""
    return [{k: v for k, v in e.items() if k != "s_per_pick"} for e in manifest["epochs"]]


def test_a_tiny_finetune_lowers_the_answer_loss_on_its_training_samples(tiny_reference) -> None:
    m = tiny_reference.manifest
    assert m["steps"] == 6 and m["samples"] == {"train": 5, "heldout": 5, "given": 10}
    assert [e["epoch"] for e in m["epochs"]] == [0, 1, 2] and all(e["pools"] == 5 for e in m["epochs"])
    probe = m["probe_loss"]
    assert probe["samples"] == 5 and probe["after"] < probe["before"] - 0.1, probe
    assert len(tiny_reference.losses) == 6 and tiny_reference.resumed_from is None


def test_the_same_seed_repeats_the_adapter_and_the_held_out_figures_exactly(tiny_reference, tiny_base: Path,
                                                                            samples_file: Path, tmp_path: Path):
    again = _tiny_finetune(samples_file, tmp_path / "again", tiny_base)
    assert _same_weights(_adapter(again.out), _adapter(tiny_reference.out))
    assert _figures(again.manifest) == _figures(tiny_reference.manifest)
    assert again.losses == tiny_reference.losses and again.manifest["probe_loss"] == tiny_reference.manifest[
        "probe_loss"]


def test_another_seed_trains_other_weights_and_the_cli_says_how_to_serve_an_hf_base(
        tiny_reference, tiny_base: Path, samples_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "seed1"
    code = main(["finetune", "--data", str(samples_file), "--out", str(out), "--base", str(tiny_base),
                 "--seed", "1", *TINY_CLI])
    printed = capsys.readouterr().out
    assert code == 0
    mine, reference = _adapter(out), _adapter(tiny_reference.out)
    assert mine.keys() == reference.keys() and not _same_weights(mine, reference)
    # An HF base: no GGUF file, said before training and at the end, naming the conversion and the GGUF base.
    assert not (out / "ranker.gguf").exists() and json.loads((out / "ranker.json").read_text())["gguf"] is None
    notes = [line for line in printed.splitlines() if "convert_hf_to_gguf.py" in line]
    assert len(notes) == 2 and all(f"{out}/merged" in n and "--base local" in n for n in notes), printed
    assert printed.splitlines()[-1].startswith(f"tuned model merged into {out / 'merged'}")


def _interrupt_training(monkeypatch, at_call: int, error: type[BaseException]) -> None:
    """Raise ``error`` in the ``at_call``-th forward pass of training (the answer-loss probes run without grad)."""
    import torch

    from collm_nas.finetune import train as module

    real, calls = module._answer_loss, [0]

    def answer_loss(*args, **kwargs):
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] == at_call:
                raise error()
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_answer_loss", answer_loss)


def test_ctrl_c_saves_and_the_resumed_run_ends_with_the_uninterrupted_weights(
        tiny_reference, tiny_base: Path, samples_file: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from collm_nas.finetune.train import FinetuneInterrupted

    out = tmp_path / "interrupted"
    # Steps take 2, 2, 1 samples (5 a epoch): the 6th forward pass is step 4's first, so Ctrl-C saves step 3.
    _interrupt_training(monkeypatch, 6, KeyboardInterrupt)
    with pytest.raises(FinetuneInterrupted, match="run the same command again to resume"):
        _tiny_finetune(samples_file, out, tiny_base)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").is_file() and not (out / "ranker.json").exists()
    capsys.readouterr()  # what the interrupted run wrote (transformers' loading bar)
    # The folder now holds a fine-tune of seed 0: another seed is refused, in one line, before any training.
    code, err = _finetune_cli(capsys, "--data", str(samples_file), "--out", str(out), "--base", str(tiny_base),
                              "--seed", "1", *TINY_CLI)
    assert code == 2 and "holds a fine-tune of other data, base or options" in _one_line_error(err)
    resumed = _tiny_finetune(samples_file, out, tiny_base)
    assert resumed.resumed_from == 3 and not (out / "checkpoint.pt").exists()
    assert _same_weights(_adapter(out), _adapter(tiny_reference.out))
    assert _figures(resumed.manifest) == _figures(tiny_reference.manifest)
    assert resumed.losses == tiny_reference.losses


def test_a_crash_resumes_from_the_last_periodic_checkpoint_to_the_same_weights(
        tiny_reference, tiny_base: Path, samples_file: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "crashed"
    # The 9th forward pass is step 5's second: a crash there (as kill -9, nothing saved on the way out)
    # leaves the checkpoint of step 4 (--save-every 2), and the resumed run does step 5 again.
    _interrupt_training(monkeypatch, 9, MemoryError)
    with pytest.raises(MemoryError):
        _tiny_finetune(samples_file, out, tiny_base)
    monkeypatch.undo()
    resumed = _tiny_finetune(samples_file, out, tiny_base)
    assert resumed.resumed_from == 4
    assert _same_weights(_adapter(out), _adapter(tiny_reference.out))
    assert _figures(resumed.manifest) == _figures(tiny_reference.manifest)


def test_an_hf_base_gives_a_merged_model_equal_to_base_plus_adapter(tiny_reference, tiny_base: Path,
                                                                   tmp_path: Path) -> None:
    import peft
    import torch
    import transformers

    out = tiny_reference.out
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype=torch.float32)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_base), dtype=torch.float32)
    ids = torch.tensor([[1, 40, 41, 42, 2, 5, 1, 50]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        want = peft.PeftModel.from_pretrained(base, str(out / "adapter"))(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, plain, atol=1e-3)
    # The ranker cannot serve it until it is converted: one line naming the converter and the GGUF base.
    with pytest.raises(UserError) as refused:
        find_model(out)
    message = str(refused.value)
    assert "\n" not in message and "convert_hf_to_gguf.py" in message and "--base local" in message
    # Converted as the message says (into OUT/ranker.gguf), the folder serves, asked as it was trained.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "ranker.json").write_text((out / "ranker.json").read_text())
    (copy / "ranker.gguf").write_bytes(b"GGUF")
    found = find_model(copy)
    assert found.gguf_path == (copy / "ranker.gguf").resolve() and found.style == "compact"


def test_finetune_refuses_a_finished_out_a_file_out_and_cuda_without_a_gpu(
        tiny_reference, tiny_base: Path, samples_file: Path, tmp_path: Path, capsys) -> None:
    import torch

    common = ["--data", str(samples_file), "--base", str(tiny_base), *TINY_CLI]
    code, err = _finetune_cli(capsys, "--out", str(tiny_reference.out), *common)
    assert code == 2 and "already holds a finished fine-tune" in _one_line_error(err)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, err = _finetune_cli(capsys, "--out", str(a_file), *common)
    assert code == 2 and "is a file" in _one_line_error(err)
    if not torch.cuda.is_available():
        code = main(["finetune", "--out", str(tmp_path / "gpu"), "--device", "cuda", *common])
        printed = capsys.readouterr()
        line = _one_line_error(printed.err)
        assert code == 2 and "no CUDA device" in line and "--device cpu" in line and printed.out == ""
        assert not (tmp_path / "gpu").exists()


# ------------------------------------------------------------------ the real thing (slow)
def _require_model() -> None:
    from collm_nas.llm.local_server import INSTALL_HINT, local_model_available

    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        missing = "the finetune extra (transformers, peft) is not installed"
    else:
        missing = None if local_model_available() else INSTALL_HINT
    if missing:
        if os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1":
            pytest.fail(f"COLLM_NAS_REQUIRE_LOCAL_LLM=1 but {missing}", pytrace=False)
        pytest.skip(missing)


@pytest.mark.local_llm
def test_a_killed_tiny_finetune_resumes_lowers_the_loss_and_serves_the_ranker(samples_file: Path,
                                                                             tmp_path: Path) -> None:
    _require_model()
    out = tmp_path / "tuned"
    command = [sys.executable, "-m", "collm_nas.cli", "finetune", "--data", str(samples_file), "--out", str(out),
               "--max-samples", "4", "--epochs", "3", "--batch-size", "2", "--holdout", "0", "--lr", "3e-3",
               "--save-every", "1", "--threads", "1", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    checkpoint = out / "checkpoint.pt"
    try:
        while not checkpoint.exists():  # the first optimiser step has been saved
            assert first.poll() is None, first.stdout.read().decode()
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL and not (out / "ranker.json").exists()
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from the checkpoint at step" in second.stdout
    resumed_at = int(second.stdout.split("resuming from the checkpoint at step ")[1].split("/")[0])
    manifest = json.loads((out / "ranker.json").read_text())
    assert 1 <= resumed_at < manifest["steps"] == 6 and not checkpoint.exists()
    probe = manifest["probe_loss"]
    assert probe["samples"] == 4 and probe["after"] < probe["before"]  # the loss falls on the training samples
    assert (out / "ranker.gguf").stat().st_size > 50_000_000 and (out / "adapter").is_dir()

    # The output loads in the ranker path: the local server with the tuned GGUF, a grammar-constrained pick.
    from collm_nas.llm.session import open_llm

    space = SPACES.resolve("nb201")
    with open_llm("local", {"model": str(out)}, roles=("ranker",), log_path=tmp_path / "llm.log") as roles:
        assert roles.tuned_ranker and roles.ranker_style == "compact"
        assert roles.configs["ranker"].temperature == 0.0
        ranker = LLMRanker.for_roles(roles)
        outcome = ranker.pick(roles.chat("ranker"), space, TRIALS, POOL, max_redraws=0)
    assert outcome.code in POOL and outcome.calls[0]["mode"] == "grammar" and outcome.calls[0]["ok"]
    # hybrid's roles: the Navigator and Generator on the embedded model, the tuned ranker on its own server.
    from collm_nas.llm.local_server import LOCAL_MODEL_NAME

    with open_llm("local", {"model": str(out)}, roles=("navigator", "generator"),
                  log_path=tmp_path / "llm2.log") as roles:
        assert set(roles.chats) == {"navigator", "generator", "ranker"} and roles.tuned_ranker
        assert roles.configs["navigator"].model == LOCAL_MODEL_NAME
        assert roles.configs["ranker"].base_url != roles.configs["navigator"].base_url

    # Same command again: the finished folder is not overwritten.
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a finished fine-tune" in again.stderr
