"""Checkpoint folders (the design's format), written atomically, read without unpickling:

    model.safetensors     every weight of the VLA (backbone, LoRA adapters, head)
    policy.json           PolicySpec, backbone family, text vocabulary size, LoRA settings, trained tasks
    config.yaml           the resolved hydra config of the run
    action_stats.json     q01/q99/... of the training actions (un-normalisation at inference)
    state_stats.json      mean/std of the proprioceptive state (when the policy reads it)
    processor.json        the processor's pipeline described (policies.processor; rebuilt from the files above)
    backbone/             the backbone's HF config, tokenizer and image processor files
    trainer_state.json    (training checkpoints) step, scheduler, RNG states; optimizer.safetensors
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, load_model, save_file, save_model

from action_tokenizer import ActionStats

from .backbone import Backbone, build_backbone_from_dir, save_tokenizer
from .transforms import StateNormalizer
from .vla_model import PolicySpec, VLAModel

REQUIRED = ("model.safetensors", "policy.json", "action_stats.json", "backbone/config.json")
VOCAB_ROWS = "vocab_rows"  # in model.safetensors: the token ids whose embedding / LM-head rows it holds


class CheckpointError(ValueError):
    pass


def apply_lora(model: VLAModel, lora: dict | None) -> None:
    """LoRA adapters (peft) on the language model's projections, in place; other backbone
    weights freeze, the head stays trainable."""
    if not lora:
        return
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=int(lora.get("r", 32)), lora_alpha=int(lora.get("alpha", 16)),
                     lora_dropout=float(lora.get("dropout", 0.0)),
                     target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    inject_adapter_in_model(cfg, model.lm)
    for name, p in model.lm.named_parameters():
        p.requires_grad = "lora_" in name


def _vocab_matrices(model: VLAModel) -> list[str]:
    """State-dict names of the input embedding and (when untied) the LM head."""
    wanted = {id(model.lm.get_input_embeddings().weight), id(model.lm.get_output_embeddings().weight)}
    return [n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in wanted]


def _tied_copies(model) -> set[str]:
    """Names under which an already named parameter appears again (a tied LM head): saved once."""
    seen, copies = set(), set()
    for n, p in model.named_parameters(remove_duplicate=False):
        (copies.add(n) if id(p) in seen else seen.add(id(p)))
    return copies


def save_checkpoint(path: str | Path, model: VLAModel, config_yaml: str, lora: dict | None = None,
                    trainer_state: dict | None = None, optimizer_tensors: dict | None = None,
                    vocab_rows: list[int] | None = None, weights: dict | None = None,
                    tasks: list[str] | None = None) -> Path:
    """Write a checkpoint folder; a crash mid-way leaves the previous one intact. vocab_rows:
    keep only these rows of the (frozen) vocabulary matrices; a load rebuilds the rest as they
    were initialised, from the run's seed: with the real 151k vocabulary a tiny policy's file
    shrinks from ~160 MB to a few MB and still reads every word as the model knew it. weights: the
    model's state dict gathered elsewhere (FSDP shards the model's own), else the model's. tasks:
    the instructions it was trained on (evaluation refuses a suite none of them belong to)."""
    def write(tmp: Path) -> None:
        (tmp / "backbone").mkdir()
        names = _vocab_matrices(model)
        if weights is None and (vocab_rows is None or len(names) != 2):  # tied matrices are saved whole
            save_model(model, str(tmp / "model.safetensors"))
        else:
            tied = _tied_copies(model)
            tensors = {n: t for n, t in (model.state_dict() if weights is None else weights).items() if n not in tied}
            if vocab_rows is not None and len(names) == 2:
                rows = torch.as_tensor(sorted(set(vocab_rows)), dtype=torch.long)
                tensors = {n: t[rows] if n in names else t for n, t in tensors.items()} | {VOCAB_ROWS: rows}
            save_file({n: t.contiguous() for n, t in tensors.items()}, str(tmp / "model.safetensors"))
        meta = {"format": 1, "spec": model.spec.to_dict(), "family": model.family,
                "text_vocab_size": model.text_vocab_size, "lora": lora, "tasks": tasks}
        (tmp / "policy.json").write_text(json.dumps(meta, indent=2))
        (tmp / "config.yaml").write_text(config_yaml)
        processor = model.processor
        processor.action_stats.to_json(tmp / "action_stats.json")
        if processor.state_normalizer is not None:
            (tmp / "state_stats.json").write_text(json.dumps(processor.state_normalizer.to_dict()))
        (tmp / "processor.json").write_text(json.dumps(processor.describe(), indent=2))
        model.lm.config.save_pretrained(tmp / "backbone")
        save_tokenizer(model.tokenizer, tmp / "backbone", compact=vocab_rows is not None)
        model.image_processor.save_pretrained(tmp / "backbone")
        write_trainer_state(tmp, trainer_state, optimizer_tensors)

    return write_folder_atomic(Path(path), write)


def write_trainer_state(folder: Path, trainer_state: dict | None, optimizer_tensors: dict | None) -> None:
    if trainer_state is not None:
        (folder / "trainer_state.json").write_text(json.dumps(trainer_state))
    if optimizer_tensors:
        save_file({k: v.contiguous() for k, v in optimizer_tensors.items()}, str(folder / "optimizer.safetensors"))


def write_folder_atomic(path: Path, write) -> Path:
    """write(tmp_folder), then swap it in: a crash mid-way leaves the previous folder intact."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def check_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if missing:
        raise CheckpointError(f"{path} is not a vla checkpoint: missing {', '.join(missing)}")
    return path


def load_normalization(path: str | Path) -> tuple[ActionStats, StateNormalizer | None]:
    """A checkpoint's action statistics and state normaliser (None for a policy without state)."""
    path = Path(path)
    stats = ActionStats.from_json(path / "action_stats.json")
    state = None
    if (path / "state_stats.json").exists():
        s = json.loads((path / "state_stats.json").read_text())
        state = StateNormalizer(s["mean"], s["std"])
    return stats, state


def trained_tasks(path: str | Path) -> tuple[list[str], str] | None:
    """(the instructions a checkpoint was trained on, the training suite's name); policy.json
    records them since 2026-12; older checkpoints: the tasks of the suite in their config.yaml.
    None when neither says."""
    path = Path(path)
    meta = json.loads((path / "policy.json").read_text())
    suite = (run_config(path).get("suite") or {}).get("name")
    if meta.get("tasks"):
        return list(meta["tasks"]), suite
    if not suite:
        return None
    from envs.suites import get_suite

    try:
        return [t.instruction for t in get_suite(suite).tasks], suite
    except (KeyError, ValueError):
        return None


def run_config(path: Path) -> dict:
    """The resolved hydra config the checkpoint's run wrote ({} for a checkpoint without one)."""
    file = Path(path) / "config.yaml"
    return (yaml.safe_load(file.read_text()) or {}) if file.is_file() else {}


def load_model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu", dtype: str = "auto") -> VLAModel:
    path = check_checkpoint(path)
    try:
        meta = json.loads((path / "policy.json").read_text())
        spec = PolicySpec(**meta["spec"])
        stats, state = load_normalization(path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable policy metadata ({type(e).__name__}: {e})") from None
    # built from the run's seed: the frozen vocabulary rows a compact file leaves out come back as
    # the model had them in training (words it never trained on included), not as zeros
    seed = int(run_config(path).get("seed", 0))
    backbone: Backbone = build_backbone_from_dir(path / "backbone", meta["family"], meta["text_vocab_size"], dtype,
                                                 seed=seed)
    model = VLAModel(backbone, spec, stats, state)
    apply_lora(model, meta.get("lora"))
    try:
        missing, unexpected = load_weights(model, path / "model.safetensors")
    except Exception as e:  # a truncated or foreign file: say which, not safetensors' internals
        raise CheckpointError(f"{path / 'model.safetensors'} cannot be read: {e}") from None
    if missing or unexpected:
        raise CheckpointError(f"{path / 'model.safetensors'} does not match the policy it describes: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.to(device).eval()


def load_weights(model: VLAModel, file: Path, skip: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Load model.safetensors into the model; a file saved with vocab_rows gets its rows back in
    place and the model's own values elsewhere (a model built from the run's seed: the frozen rows
    as training had them; a warm start on new instructions: their new words keep the fresh model's
    seeded, distinct embeddings). skip: names not to load (they stay as the model has them).
    Returns (missing, unexpected) names."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        compact = VOCAB_ROWS in f.keys()
    if not compact and not skip:
        return load_model(model, str(file), strict=False)
    tensors = {k: v for k, v in load_file(str(file)).items() if k not in skip}
    rows = tensors.pop(VOCAB_ROWS, None)
    state = model.state_dict()
    for name in _vocab_matrices(model) if rows is not None else []:
        if name in tensors:
            full = state[name].clone()
            full[rows] = tensors[name].to(full.dtype)
            tensors[name] = full
    result = model.load_state_dict(tensors, strict=False)
    tied = _tied_copies(model)  # loaded with the matrix they share
    return [n for n in result.missing_keys if n not in tied], result.unexpected_keys


def load_trainer_state(path: str | Path) -> tuple[dict, dict]:
    path = Path(path)
    state = json.loads((path / "trainer_state.json").read_text())
    opt = load_file(str(path / "optimizer.safetensors")) if (path / "optimizer.safetensors").exists() else {}
    return state, opt
