"""The training loop every stage shares: schedule, accelerate, exact resume, logging, checkpoints.

A stage (vla.training.action, vla.spatial.stage) says what is trained: a model whose forward(batch)
returns {"loss", "accuracy"}, its samples, and how its checkpoints are written and read back.
Rerunning the same command resumes from the newest checkpoint in `train.output_dir`, with the same
data order, optimiser and RNG state, so the loss curve continues as if never interrupted.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

CKPT_PREFIX = "step_"


class TrainError(ValueError):
    pass


# -- data ----------------------------------------------------------------------------------
def step_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The sample indices of one step: epoch e is the permutation seeded by (seed, e). A function
    of the step number alone, so a resumed run sees exactly the batches it would have."""
    epoch, k = divmod(step, max(1, n // batch_size))
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size].tolist()


def batch_indices(n: int, batch_size: int, seed: int, start_step: int, rank: int = 0, world: int = 1):
    """This process's share of step_indices for start_step, start_step + 1, ...: with `world`
    processes (accelerate launch) a step's batch is world x batch_size samples, process `rank`
    takes its slice, so the processes learn from different samples and a resumed run from the same."""
    step = start_step
    while True:
        yield step_indices(n, batch_size * world, seed, step)[rank * batch_size:(rank + 1) * batch_size]
        step += 1


# -- schedule, RNG, checkpoints -------------------------------------------------------------
def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def rng_state() -> dict:
    import torch

    py = random.getstate()
    return {"python": [py[0], list(py[1]), py[2]], "numpy": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "torch": torch.get_rng_state().tolist()}


def set_rng_state(s: dict) -> None:
    import torch

    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    np.random.set_state(("MT19937", np.array(s["numpy"], np.uint32), s["numpy_pos"], 0, 0.0))
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))


def optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """AdamW state as flat tensors (safetensors) plus its JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(optimizer, tensors: dict, groups: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def full_optimizer_tensors(model, optimizer, names: list[str]) -> tuple[dict, dict]:
    """optimizer_tensors under FSDP, where each process holds a shard of every state: gathered
    (a collective: every process calls it; the main process gets them whole) and stored by
    parameter index as without FSDP, so either kind of run resumes from the file."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    index = {n: i for i, n in enumerate(names)}
    tensors = {f"{index[n]}.{k}": v for n, st in sd.get("state", {}).items() for k, v in st.items()}
    return tensors, {"param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in sd.get("param_groups", [])]}


def load_full_optimizer(model, optimizer, tensors: dict, groups: dict, names: list[str]) -> None:
    """load_optimizer under FSDP: every process takes its shard of the whole state (after prepare)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state: dict = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(names[int(i)], {})[k] = v
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in groups["param_groups"]]
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))


def checkpoints(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted((p for p in d.glob(f"{CKPT_PREFIX}*") if p.is_dir() and "." not in p.name
                   and (p / "trainer_state.json").exists()), key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def _plain(cfg, key: str):
    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v


# -- the run --------------------------------------------------------------------------------
@dataclass
class Stage:
    """What a run trains. The loop (schedule, accelerate, resume, logging, checkpoints) is shared:
    stage=action trains the policy, stage=spatial the backbone on spatial VQA (vla.spatial)."""

    model: Any  # nn.Module whose forward(batch) returns {"loss", "accuracy"}
    dataset: Any  # indexable samples
    collate: Callable[[list], dict]
    # (checkpoint folder, trainer state, optimizer tensors, the weights gathered under FSDP or None), atomic
    save: Callable[[Path, dict, dict, dict | None], Any]
    load: Callable[[Path], None]  # a checkpoint's weights into model
    summary: str
    accuracy_name: str
    evaluate: Callable[[Path], dict] | None = None  # checkpoint -> {TensorBoard tag: value}
    # more inputs for step n (co-training's spatial questions), a function of n alone for exact resume
    extra_inputs: Callable[[int], dict] | None = None
    shardable: bool = False  # save takes FSDP's gathered weights (else the stage saves its module's own)


# config keys a resumed run must share with the run that wrote its checkpoint
RUN_KEYS = {"action": ("model", "head", "train.cameras", "train.resolution", "train.use_state", "train.grasp_count",
                       "train.dataset", "train.lora", "train.cotrain_spatial", "train.spatial_loss_weight",
                       "train.spatial_dataset"),
            "spatial": ("model", "train.dataset")}


def mixed_precision(setting: str) -> str:
    """train.mixed_precision for accelerate: auto = the launcher's choice (`accelerate launch
    --mixed_precision`, a config file), else bf16 on a GPU and none on a CPU. The weights stay in
    model.dtype; autocast runs the matrix products in the lower precision."""
    import os

    import torch

    if setting == "auto":
        return os.environ.get("ACCELERATE_MIXED_PRECISION") or ("bf16" if torch.cuda.is_available() else "no")
    if setting not in ("no", "bf16", "fp16"):
        raise TrainError(f"train.mixed_precision must be auto, no, bf16 or fp16, not {setting!r}")
    if setting == "fp16" and not torch.cuda.is_available():
        raise TrainError("train.mixed_precision=fp16 needs a GPU (its loss scaling); use bf16 on a CPU")
    return setting


def enable_gradient_checkpointing(model) -> None:
    """Recompute each backbone layer's activations in backward instead of keeping them (memory for
    time: `python -m vla.plan_memory` shows how much). Non-reentrant, so frozen embeddings and LoRA
    need no input-gradient hooks."""
    from transformers import PreTrainedModel

    backbone = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if backbone is None or not backbone.supports_gradient_checkpointing:
        raise TrainError("train.gradient_checkpointing: this model has no Hugging Face backbone that supports it")
    backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def use_backbone_checkpoint(cfg: DictConfig) -> None:
    """backbone_checkpoint=PATH (a spatial-stage checkpoint or any HF folder) becomes model.pretrained."""
    path = cfg.get("backbone_checkpoint")
    if not path:
        return
    config = Path(path) / "config.json"
    if not config.is_file():
        raise TrainError(f"backbone_checkpoint={path}: no Hugging Face model folder there (config.json missing)")
    family = json.loads(config.read_text()).get("model_type")
    if family != cfg.model.family:
        raise TrainError(f"backbone_checkpoint={path} holds a {family} model, but model.family is {cfg.model.family}")
    OmegaConf.update(cfg, "model.pretrained", str(Path(path).resolve()))


def train_stage(cfg: DictConfig, make_stage: Callable[[DictConfig, str, Path], Stage]) -> Path:
    """Run (or resume) a stage built by make_stage(cfg, resolved config YAML, output folder)."""
    import torch
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from policies.checkpoint import load_trainer_state

    torch.set_num_threads(int(cfg.train.num_threads))
    precision = mixed_precision(cfg.train.get("mixed_precision", "auto"))  # (absent in older runs' configs)
    use_backbone_checkpoint(cfg)
    out = Path(cfg.train.output_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    found = checkpoints(out)
    if found and not cfg.train.resume:
        raise TrainError(f"{out} already holds checkpoints: rerun with train.resume=true to continue that run, "
                         f"or choose another train.output_dir")
    if found:
        saved = OmegaConf.create((found[-1] / "config.yaml").read_text())
        for key in ("stage", *RUN_KEYS[cfg.stage]):
            if OmegaConf.select(saved, key, default="<absent>") == "<absent>":
                continue  # a run from before the key existed
            if _plain(saved, key) != _plain(cfg, key):
                raise TrainError(f"{out} holds a run with a different {key} ({_plain(saved, key)} vs {_plain(cfg, key)}): "
                                 f"choose another train.output_dir for a new run")
    stage = make_stage(cfg, config_yaml, out)
    model = stage.model
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state()  # an earlier run in this process chose another precision (a singleton)
    # some backbone weights get no gradient from an action loss (e.g. the unused text LM-head rows)
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if cfg.train.get("gradient_checkpointing"):
        enable_gradient_checkpointing(model)
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    if fsdp and not stage.shardable:
        raise TrainError(f"stage={cfg.stage}{' with co-training' if cfg.train.get('cotrain_spatial') else ''} "
                         "cannot save FSDP's sharded weights yet: launch it with a DDP config (configs/accelerate/)")
    names = [n for n, p in model.named_parameters() if p.requires_grad]  # the optimizer's parameter order
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.warmup_steps, cfg.train.max_steps))
    start, opt = 0, None
    if found:
        ckpt = found[-1]
        stage.load(ckpt)  # whole weights into the unsharded model: prepare shards them
        state, opt = load_trainer_state(ckpt)
        if not fsdp:
            load_optimizer(optimizer, opt, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        print(f"resuming from {ckpt} (step {start})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config_yaml)
    log = out / "metrics.jsonl"
    if log.exists():  # drop what a killed run logged after its last checkpoint
        kept = [l for l in log.read_text().splitlines() if l and json.loads(l)["step"] <= start]
        log.write_text("".join(l + "\n" for l in kept))
    n_trainable = sum(p.numel() for p in params)
    if accelerator.is_main_process:
        print(f"stage {cfg.stage}: {cfg.model.family} {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
              f"({n_trainable / 1e6:.1f}M trained), mixed precision {precision}"
              f"{', gradient checkpointing' if cfg.train.get('gradient_checkpointing') else ''}, {stage.summary}"
              + (f"; on {accelerator.num_processes} processes ({accelerator.distributed_type.value})" if accelerator.num_processes > 1 else ""))
    loader = torch.utils.data.DataLoader(
        stage.dataset, batch_sampler=batch_indices(len(stage.dataset), cfg.train.batch_size, cfg.seed, start,
                                                   accelerator.process_index, accelerator.num_processes),
        collate_fn=stage.collate, num_workers=cfg.train.num_workers)
    model, optimizer = accelerator.prepare(model, optimizer)
    if fsdp and opt is not None:
        load_full_optimizer(model, optimizer, opt, state["optimizer"], names)
    tb = SummaryWriter(str(out / "tb")) if accelerator.is_main_process else None
    metrics = log.open("a") if accelerator.is_main_process else None

    def evaluate_checkpoint(path: Path, step: int) -> None:
        for tag, value in stage.evaluate(path).items():
            print(f"{tag} at step {step}: {value:.3f}")
            if tb:
                tb.add_scalar(tag, value, step)
        if tb:
            tb.flush()

    def save(step: int) -> Path:
        accelerator.wait_for_everyone()
        path = out / "checkpoints" / f"{CKPT_PREFIX}{step:06d}"
        # FSDP: every process takes part in gathering the shards
        weights = accelerator.get_state_dict(model) if fsdp else None
        tensors, groups = full_optimizer_tensors(model, optimizer, names) if fsdp else optimizer_tensors(optimizer)
        if accelerator.is_main_process:
            state = {"step": step, "optimizer": groups, "scheduler": scheduler.state_dict(), "rng": rng_state()}
            stage.save(path, state, tensors, weights)
            for old in checkpoints(out)[:-int(cfg.train.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def due_for_evaluation(step: int) -> bool:
        every = cfg.train.eval_every
        return bool(stage.evaluate and accelerator.is_main_process
                    and (step == cfg.train.max_steps or (every and step % every == 0)))

    # a run killed during (or before) the validation of its newest checkpoint validates it now: the
    # stage writes each evaluation to out/eval/<checkpoint>/, success.json last
    if found and due_for_evaluation(start) and not (out / "eval" / found[-1].name / "success.json").is_file():
        print(f"{found[-1]} was not validated: validating it before training on")
        evaluate_checkpoint(found[-1], start)

    model.train()
    bar = tqdm(total=cfg.train.max_steps, initial=start, desc="train", unit="step", disable=not accelerator.is_main_process)
    t_data = t_step = 0.0
    window: dict[str, list] = {"loss": [], "accuracy": []}
    last = None
    it = iter(loader)
    end = min(cfg.train.max_steps, cfg.train.get("stop_at") or cfg.train.max_steps)
    for step in range(start, end):
        t0 = time.perf_counter()
        batch = next(it)
        if stage.extra_inputs:
            batch = {**batch, **stage.extra_inputs(step)}
        t1 = time.perf_counter()
        with accelerator.autocast():
            result = model(batch)
        accelerator.backward(result["loss"])
        if cfg.train.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)  # the prepared ones (FSDP: sharded)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        t_data, t_step = t_data + (t1 - t0), t_step + (t2 - t0)
        scalars = {k: v.item() for k, v in result.items()}  # loss, accuracy and a stage's parts (e.g. spatial_loss)
        for k, v in scalars.items():
            window.setdefault(k, []).append(v)
        if metrics:
            metrics.write(json.dumps({"step": step + 1, **scalars, "lr": scheduler.get_last_lr()[0],
                                      "data_s": t1 - t0, "step_s": t2 - t0}) + "\n")
        bar.update(1)
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.max_steps:
            l, a = np.mean(window["loss"]), np.mean(window["accuracy"])
            sps = len(window["loss"]) * cfg.train.batch_size * accelerator.num_processes / max(t_step, 1e-9)
            bar.set_postfix(loss=f"{l:.4f}", acc=f"{a:.3f}", samples_s=f"{sps:.1f}", data=f"{t_data / max(t_step, 1e-9):.0%}")
            if tb:
                tb.add_scalar("train/loss", l, step + 1)
                tb.add_scalar(f"train/{stage.accuracy_name}", a, step + 1)
                for k, v in window.items():
                    if k not in ("loss", "accuracy"):
                        tb.add_scalar(f"train/{k}", np.mean(v), step + 1)
                tb.add_scalar("train/lr", scheduler.get_last_lr()[0], step + 1)
                tb.add_scalar("train/samples_per_s", sps, step + 1)
                tb.add_scalar("train/data_loading_share", t_data / max(t_step, 1e-9), step + 1)
            metrics.flush() if metrics else None
            window = {"loss": [], "accuracy": []}
            t_data = t_step = 0.0
        if (step + 1) % cfg.train.save_every == 0 or step + 1 in (end, cfg.train.max_steps):
            last = save(step + 1)
            if due_for_evaluation(step + 1):
                evaluate_checkpoint(last, step + 1)
    bar.close()
    if metrics:
        metrics.close()
    if tb:
        tb.close()
    if last is None:  # nothing left to do: the run had already finished
        last = checkpoints(out)[-1]
    print(f"checkpoint: {last}")
    return last
