"""How much GPU memory a training run takes, before renting the GPUs:

    python -m vla.plan_memory model=qwen2_5_vl_3b head=parallel train.batch_size=16 gpus=8

One row per way to train (full fine-tuning or LoRA; with or without gradient checkpointing; DDP or
FSDP over `gpus`): weights, gradients, AdamW state and activations per GPU, in GB. Sizes come from
the real architecture built on the meta device (exact, no memory); activations are measured, not
guessed: the bytes autograd keeps for backward in a real forward pass (bf16 autocast, as on a GPU)
of reduced-depth copies at full width, per layer and per sample, scaled to the full depth and
batch. `measure=true` also checks the method against this machine: a real training step of a
depth-1 copy, its peak resident memory beside the plan's figure for the same run.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .training.action import lora_settings, set_trainable

GB = 1e9
INSTRUCTION = "pick up the black bowl between the plate and the ramekin and place it on the plate"


@dataclass
class Parameters:
    weights: int  # bytes of every weight (a tied matrix once)
    grads: int  # bytes of the gradients (trainable weights, in their dtype)
    optimizer: int  # AdamW's two moments per trainable weight, in its dtype
    largest_layer: int  # bytes of the biggest decoder layer / vision block (FSDP gathers one at a time)
    unsharded: int  # bytes outside those layers (embedding, merger, heads): FSDP's root unit, gathered throughout


def build_policy(cfg: DictConfig, depth: int | None = None, vision_depth: int | None = None, dtype: str = "bfloat16",
                 lora: dict | None = None):
    """The run's VLAModel (random or no weights: under torch.device("meta") none are allocated)."""
    from action_tokenizer import ActionStats
    from policies.backbone import build_backbone
    from policies.transforms import StateNormalizer
    from policies.vla_model import PolicySpec, VLAModel, extra_tokens

    spec = PolicySpec(head=cfg.head.name, output=cfg.head.output, chunk_size=cfg.head.chunk_size,
                      queries=cfg.head.get("queries", "dims"),
                      cameras=list(cfg.train.cameras), resolution=cfg.train.resolution, use_state=cfg.train.use_state,
                      action_token_mode=cfg.model.action_token_mode)
    model_cfg = {**OmegaConf.to_container(cfg.model, resolve=True), "pretrained": None, "dtype": dtype}
    if depth:
        model_cfg.update(depth=depth, vision_depth=vision_depth)
    acts = np.random.default_rng(0).uniform(-1, 1, (64, spec.action_dim)).astype(np.float32)
    model = VLAModel(build_backbone(model_cfg, extra_tokens(spec)), spec, ActionStats.from_actions(acts),
                     StateNormalizer(np.zeros(8), np.ones(8)))
    set_trainable(model, cfg, lora)
    return model


def layer_stacks(model) -> list:
    return [model.lm.model.language_model.layers, model.lm.model.visual.blocks]


def parameter_sizes(model) -> Parameters:
    def nbytes(params) -> int:
        return sum(p.numel() * p.element_size() for p in params)

    params = list(model.parameters())  # each shared parameter once
    trainable = [p for p in params if p.requires_grad]
    in_layers = {id(p) for stack in layer_stacks(model) for layer in stack for p in layer.parameters()}
    largest = max(nbytes(layer.parameters()) for stack in layer_stacks(model) for layer in stack)
    return Parameters(weights=nbytes(params), grads=nbytes(trainable), optimizer=2 * nbytes(trainable),
                      largest_layer=largest, unsharded=nbytes(p for p in params if id(p) not in in_layers))


def training_batch(model, batch_size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    res, spec = model.spec.resolution, model.spec
    images = {c: rng.integers(0, 255, (batch_size, res, res, 3), dtype=np.uint8) for c in spec.cameras}
    actions = rng.uniform(-1, 1, (batch_size, spec.chunk_size, spec.action_dim)).astype(np.float32)
    return model.processor.encode(images, np.zeros((batch_size, 8), np.float32), [INSTRUCTION] * batch_size, actions=actions,
                        augment=True)


def saved_activation_bytes(model, batch: dict, autocast: bool = True) -> int:
    """Bytes of the tensors autograd keeps from a training forward until backward (weights
    excluded), counted once per storage; autocast: bf16, as accelerate runs it on a GPU."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            kept[s.data_ptr()] = s.nbytes()
        return t.detach()  # (t itself: a saved output would hold its own graph, a cycle gc cannot see)

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        loss = model(batch)["loss"]
    del loss
    return sum(kept.values())


@dataclass
class Activations:
    fixed: int  # bytes independent of the batch
    per_sample: int  # outside the layer stacks, per sample
    per_text_layer: int  # per sample and language-model layer
    per_vision_block: int  # per sample and vision block (all of the sample's images)
    text_layer_input: int  # per sample: what gradient checkpointing keeps of a layer (its input)
    vision_block_input: int

    def total(self, batch: int, text_layers: int, vision_blocks: int, checkpointing: bool) -> int:
        if checkpointing:  # every layer's input kept, one layer's activations recomputed at a time
            layers = (text_layers * self.text_layer_input + vision_blocks * self.vision_block_input
                      + max(self.per_text_layer, self.per_vision_block))
        else:
            layers = text_layers * self.per_text_layer + vision_blocks * self.per_vision_block
        return self.fixed + batch * (self.per_sample + layers)


def release_memory() -> None:
    """Free a dropped model's gigabytes now: it holds reference cycles (gc), and glibc keeps freed
    heap memory unless asked (malloc_trim), so probe after probe would pile up."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def measure_activations(cfg: DictConfig, lora: dict | None, dtype: str = "bfloat16", autocast: bool = True) -> Activations:
    """Four forwards of reduced-depth copies (1 or 2 layers / blocks, batch 1 or 2), weights
    zero (their values do not change what autograd keeps)."""
    from transformers.initialization import no_init_weights

    got = {}
    for key in ((1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)):
        text, vision, batch = key
        with no_init_weights():  # zeros instead of random draws (seconds for the 151k-row embedding)
            model = build_policy(cfg, text, vision, dtype, lora)
        for p in model.parameters():
            p.data.zero_()
        inputs = training_batch(model, batch)
        got[key] = saved_activation_bytes(model, inputs, autocast)
        if key == (1, 1, 1):
            tokens = inputs["input_ids"].shape[1]
            patches = inputs["pixel_values"].shape[0]
            hidden = model.lm.config.get_text_config().hidden_size
            vision_hidden = model.lm.config.vision_config.hidden_size
        del model, inputs
        release_memory()
    one = got[(1, 1, 1)]
    per_text, per_vision = got[(2, 1, 1)] - one, got[(1, 2, 1)] - one
    sample = got[(1, 1, 2)] - one  # one more sample through one layer and one block
    return Activations(fixed=one - sample, per_sample=sample - per_text - per_vision, per_text_layer=per_text,
                       per_vision_block=per_vision, text_layer_input=tokens * hidden * 2,
                       vision_block_input=patches * vision_hidden * 2)  # bf16 (fp32 runs: checkpointing not planned)


def full_depth(model) -> tuple[int, int]:
    return model.lm.config.get_text_config().num_hidden_layers, model.lm.config.vision_config.depth


@dataclass
class Row:
    training: str  # full | LoRA r=N
    checkpointing: bool
    layout: str  # "1 GPU", "DDP xN", "FSDP xN"
    weights: float
    grads: float
    optimizer: float
    activations: float
    other: float  # DDP: its all-reduce buckets (a second copy of the gradients); FSDP: the gathered units

    @property
    def step(self) -> float:
        """AdamW's step (foreach, torch's default) holds one more gradient-sized tensor list."""
        return self.grads

    @property
    def total(self) -> float:
        """The peak: in backward with the activations, or in the optimizer step, whichever holds more."""
        return self.weights + self.grads + self.optimizer + max(self.activations, self.step) + self.other


def plan_rows(size: Parameters, act: Activations, depth: tuple[int, int], batch: int, gpus: int,
              training: str) -> list[Row]:
    """Per GPU, each GPU taking `batch` samples a step (train.batch_size is per process)."""
    rows = []
    for ckpt in (False, True):
        a = act.total(batch, *depth, ckpt) / GB
        w, g, o = size.weights / GB, size.grads / GB, size.optimizer / GB
        rows.append(Row(training, ckpt, "1 GPU", w, g, o, a, 0.0))
        if gpus > 1:
            rows.append(Row(training, ckpt, f"DDP x{gpus}", w, g, o, a, g))
            # FSDP: a shard of everything, plus the root unit (embedding, merger, heads) and two layers gathered
            gathered = (size.unsharded + 2 * size.largest_layer) / GB
            rows.append(Row(training, ckpt, f"FSDP x{gpus}", w / gpus, g / gpus, o / gpus, a, gathered))
    return rows


def plan(cfg: DictConfig, gpus: int) -> list[Row]:
    """Rows for full fine-tuning and for LoRA (train.lora, else r=32), in the GPU dtype (bf16)."""
    lora = lora_settings(cfg) or {"r": 32, "alpha": 16}
    rows = []
    for name, adapters in (("full", None), (f"LoRA r={lora.get('r', 32)}", lora)):
        with torch.device("meta"):
            model = build_policy(cfg, lora=adapters)
        rows += plan_rows(parameter_sizes(model), measure_activations(cfg, adapters), full_depth(model),
                          int(cfg.train.batch_size), gpus, name)
    return rows


def table(rows: list[Row], gpu_gb: float) -> str:
    lines = ["| training | grad. checkpointing | layout | weights | gradients | AdamW | activations | AdamW step | "
             "buckets / gathered | peak per GPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fits = "" if r.total <= gpu_gb else f" (over {gpu_gb:g})"
        lines.append(f"| {r.training} | {'yes' if r.checkpointing else 'no'} | {r.layout} | {r.weights:.1f} | {r.grads:.1f} | "
                     f"{r.optimizer:.1f} | {r.activations:.1f} | {r.step:.1f} | {r.other:.1f} | **{r.total:.1f}**{fits} |")
    return "\n".join(lines)


def resident_bytes(field: str = "VmRSS") -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def training_step_peak(cfg: DictConfig, depth: int, batch: int) -> int:
    """Peak resident bytes of a real fp32 training step (the second: AdamW's state exists) of the
    depth-`depth` copy on this CPU, above what the process held before building it. Run it in a
    fresh process with large allocations mapped (measure_on_cpu) so that freed memory leaves."""
    lora = lora_settings(cfg)
    torch.set_num_threads(2)
    before = resident_bytes()
    model = build_policy(cfg, depth, depth, "float32", lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    inputs = training_batch(model, batch)
    model.train()
    for step in range(2):
        if step == 1:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # restart the peak (VmHWM) from the current resident size
        model(inputs)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return resident_bytes("VmHWM") - before


def measure_on_cpu(cfg: DictConfig, depth: int, batch: int) -> dict:
    """The plan's method against this machine: a depth-`depth` copy in fp32 at `batch` (sizes
    and activations planned exactly as for the GPU table, from probes at depth 1-2 and batch
    1-2), beside the measured peak of its real training step."""
    lora = lora_settings(cfg)
    with torch.device("meta"):
        size = parameter_sizes(build_policy(cfg, depth, depth, "float32", lora))
    act = measure_activations(cfg, lora, "float32", autocast=False)
    planned = plan_rows(size, act, (depth, depth), batch, 1, "")[0].total * GB
    code = ("import sys, json; from omegaconf import OmegaConf; from vla.plan_memory import training_step_peak; "
            "print(json.dumps(training_step_peak(OmegaConf.create(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # big tensors mmapped: returned to the system when freed
    r = subprocess.run([sys.executable, "-c", code, OmegaConf.to_yaml(cfg, resolve=True), str(depth), str(batch)],
                       capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"the measured training step failed: {r.stderr[-2000:]}")
    measured = json.loads(r.stdout.strip().splitlines()[-1])
    return {"depth": depth, "batch": batch, "planned_gb": planned / GB, "measured_gb": measured / GB,
            "measured_over_planned": measured / planned}


@hydra.main(config_path="../configs", config_name="plan_memory", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.set_num_threads(2)
    try:
        rows = plan(cfg, int(cfg.gpus))
    except ValueError as e:
        raise SystemExit(f"vla.plan_memory: {e}") from None
    print(f"{cfg.model.family} ({cfg.model.architecture}), head {cfg.head.name}/{cfg.head.output} chunk {cfg.head.chunk_size}, "
          f"{len(cfg.train.cameras)} cameras at {cfg.train.resolution} px, train.batch_size={cfg.train.batch_size} per GPU, "
          f"weights {cfg.model.dtype if cfg.model.dtype != 'auto' else 'bfloat16'} + bf16 autocast; GB per GPU:")
    print(table(rows, float(cfg.gpu_memory_gb)))
    if cfg.measure:
        check = measure_on_cpu(cfg, int(cfg.measure_depth), int(cfg.measure_batch))
        print(f"check on this CPU (fp32, depth {check['depth']}, batch {check['batch']}): planned {check['planned_gb']:.2f} GB, "
              f"measured peak {check['measured_gb']:.2f} GB (x{check['measured_over_planned']:.2f})")
        print("RESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in check.items()))


if __name__ == "__main__":
    main()
