"""Train a VLA policy on a LeRobotDataset: `python -m vla.train suite=libero_spatial model=tiny_qwen2_5_vl head=tokens`.

`stage=spatial` tunes the backbone on spatial VQA first (vla.spatial); `backbone_checkpoint=PATH`
starts the action stage from its checkpoint.
Multi-GPU: `accelerate launch -m vla.train ...` (the same code; accelerate picks DDP and bf16).
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

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

CKPT_PREFIX = "step_"


class TrainError(ValueError):
    pass


# -- data ----------------------------------------------------------------------------------
def ensure_dataset(cfg: DictConfig) -> Path:
    root = Path(cfg.train.dataset)
    if (root / "meta" / "info.json").is_file():
        return root
    if not cfg.train.collect_if_missing:
        raise TrainError(f"dataset {root} not found; collect it with `python -m vla.collect suite={cfg.suite.name} "
                         f"episodes_per_task=N out={root}` or point train.dataset at a LeRobotDataset v3.0 folder")
    from .collect import collect_demos

    print(f"dataset {root} not found: collecting {cfg.train.collect_episodes_per_task} scripted episodes per task first")
    collect_demos(cfg.suite.name, root, cfg.train.collect_episodes_per_task, list(cfg.train.cameras),
                  cfg.train.resolution, seed=cfg.seed)
    return root


def batch_indices(n: int, batch_size: int, seed: int, start_step: int):
    """Batches of frame indices, step by step: epoch e is the permutation seeded by (seed, e).
    A function of the step number alone, so a resumed run sees exactly the batches it would have."""
    per_epoch = max(1, n // batch_size)
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        yield perm[k * batch_size:(k + 1) * batch_size].tolist()
        step += 1


def make_collate(model):
    def collate(samples: list[dict]) -> dict:
        cams = model.spec.cameras
        return model.encode({c: np.stack([s["images"][c] for s in samples]) for c in cams},
                            np.stack([s["state"] for s in samples]), [s["task"] for s in samples],
                            actions=np.stack([s["action"] for s in samples]),
                            action_is_pad=np.stack([s["action_is_pad"] for s in samples]), augment=True)
    return collate


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


def checkpoints(out: Path) -> list[Path]:
    d = out / "checkpoints"
    return sorted((p for p in d.glob(f"{CKPT_PREFIX}*") if p.is_dir() and "." not in p.name
                   and (p / "trainer_state.json").exists()), key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def _plain(cfg, key: str):
    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v


# -- the run --------------------------------------------------------------------------------
def build_model(cfg: DictConfig, dataset):
    from action_tokenizer import ActionStats
    from policies.backbone import build_backbone
    from policies.checkpoint import apply_lora
    from policies.transforms import StateNormalizer
    from policies.vla_model import PolicySpec, VLAModel, extra_tokens

    spec = PolicySpec(head=cfg.head.name, output=cfg.head.output, chunk_size=cfg.head.chunk_size,
                      cameras=list(cfg.train.cameras), resolution=cfg.train.resolution, use_state=cfg.train.use_state,
                      action_token_mode=cfg.model.action_token_mode, action_dim=dataset.actions.shape[1],
                      render_quality=dataset.info.get("vla", {}).get("render_quality"), crop_scale=cfg.train.crop_scale,
                      camera_resolution=dataset.info["features"][f"observation.images.{cfg.train.cameras[0]}"]["shape"][0])
    mask = np.ones(spec.action_dim, bool)
    mask[-1] = False  # the gripper (-1 / +1) is not normalised, as in OpenVLA
    stats = ActionStats.from_actions(dataset.actions, mask=mask)
    state = StateNormalizer(dataset.states.mean(0), dataset.states.std(0)) if spec.use_state else None
    backbone = build_backbone(OmegaConf.to_container(cfg.model, resolve=True), extra_tokens(spec), seed=cfg.seed)
    model = VLAModel(backbone, spec, stats, state)
    lora = OmegaConf.to_container(cfg.train.lora, resolve=True) if cfg.train.lora else None
    apply_lora(model, lora)
    if cfg.train.freeze_embeddings:  # text-token rows: most never occur, yet AdamW would update all 151k
        model.lm.get_input_embeddings().weight.requires_grad_(False)
    if cfg.train.freeze_vision:
        for p in model.lm.model.visual.parameters():
            p.requires_grad = False
    return model, lora


@dataclass
class Stage:
    """What a run trains. The loop (schedule, accelerate, resume, logging, checkpoints) is shared:
    stage=action trains the policy, stage=spatial the backbone on spatial VQA (vla.spatial)."""

    model: Any  # nn.Module whose forward(batch) returns {"loss", "accuracy"}
    dataset: Any  # indexable samples
    collate: Callable[[list], dict]
    save: Callable[[Path, dict, dict], Any]  # (checkpoint folder, trainer state, optimizer tensors), atomic
    load: Callable[[Path], None]  # a checkpoint's weights into model
    summary: str
    accuracy_name: str
    evaluate: Callable[[Path], dict] | None = None  # checkpoint -> {TensorBoard tag: value}


# config keys a resumed run must share with the run that wrote its checkpoint
RUN_KEYS = {"action": ("model", "head", "train.cameras", "train.resolution", "train.use_state", "train.dataset",
                       "train.lora"),
            "spatial": ("model", "train.dataset")}


def action_stage(cfg: DictConfig, config_yaml: str, out: Path) -> Stage:
    import torch

    from policies.checkpoint import save_checkpoint

    from .data import LeRobotDataset

    dataset = LeRobotDataset(ensure_dataset(cfg), action_horizon=cfg.head.chunk_size, cameras=list(cfg.train.cameras))
    shortest = min(e["length"] for e in dataset.episodes)
    if cfg.head.chunk_size > shortest:
        raise TrainError(f"head.chunk_size={cfg.head.chunk_size} is longer than the dataset's shortest episode "
                         f"({shortest} frames in {dataset.root}): choose a chunk of at most {shortest} steps")
    torch.manual_seed(cfg.seed)
    model, lora = build_model(cfg, dataset)
    if cfg.train.init_from:  # warm start: the weights of a trained policy of the same architecture, a new optimiser
        init = Path(cfg.train.init_from)
        if not (init / "model.safetensors").is_file():
            raise TrainError(f"train.init_from={init}: no checkpoint there (model.safetensors missing)")
        resume_weights(model, init)
    # frozen text embeddings: checkpoints keep only the rows the training prompts use (a few MB)
    vocab_rows = model.used_token_ids(dataset.tasks) if cfg.train.freeze_embeddings and not lora else None

    def evaluate(path: Path) -> dict:
        from .eval import evaluate as run_eval

        ecfg = OmegaConf.merge(cfg, {"eval": {"policy": "checkpoint", "checkpoint": str(path),
                                              "trials_per_task": cfg.train.eval_trials_per_task,
                                              "layouts": cfg.train.eval_layouts,
                                              "out": str(out / "eval" / path.name)}})
        return {f"eval/success_rate_{cfg.train.eval_layouts}_layouts": run_eval(ecfg)["success_rate"]}

    return Stage(
        model, dataset, make_collate(model),
        save=lambda path, state, tensors: save_checkpoint(path, model, config_yaml, lora=lora, trainer_state=state,
                                                          optimizer_tensors=tensors, vocab_rows=vocab_rows),
        load=lambda path: resume_weights(model, path),
        summary=f"head {cfg.head.name}/{cfg.head.output}, chunk {cfg.head.chunk_size}; dataset {dataset.root}: {len(dataset)} frames",
        accuracy_name="action_token_accuracy", evaluate=evaluate if cfg.train.eval_trials_per_task else None)


def resume_weights(model, path: Path) -> None:
    from policies.checkpoint import load_weights

    missing, unexpected = load_weights(model, path / "model.safetensors")
    if missing or unexpected:
        raise TrainError(f"{path} does not match this run's model: missing {missing[:5]}, unexpected {unexpected[:5]}")


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


def train(cfg: DictConfig) -> Path:
    import torch
    from accelerate import Accelerator
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from policies.checkpoint import load_trainer_state

    torch.set_num_threads(int(cfg.train.num_threads))
    if cfg.stage not in ("action", "spatial"):
        raise TrainError(f"stage must be 'action' or 'spatial', not {cfg.stage!r}")
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
            if _plain(saved, key) != _plain(cfg, key):
                raise TrainError(f"{out} holds a run with a different {key} ({_plain(saved, key)} vs {_plain(cfg, key)}): "
                                 f"choose another train.output_dir for a new run")
    if cfg.stage == "spatial":
        from .spatial.stage import spatial_stage

        stage = spatial_stage(cfg, config_yaml)
    else:
        stage = action_stage(cfg, config_yaml, out)
    model = stage.model
    from accelerate.utils import DistributedDataParallelKwargs

    # some backbone weights get no gradient from an action loss (e.g. the unused text LM-head rows)
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no",
                              cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.warmup_steps, cfg.train.max_steps))
    start = 0
    if found:
        ckpt = found[-1]
        stage.load(ckpt)
        state, opt = load_trainer_state(ckpt)
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
    print(f"stage {cfg.stage}: {cfg.model.family} {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
          f"({n_trainable / 1e6:.1f}M trained), {stage.summary}")
    loader = torch.utils.data.DataLoader(
        stage.dataset, batch_sampler=batch_indices(len(stage.dataset), cfg.train.batch_size, cfg.seed, start),
        collate_fn=stage.collate, num_workers=cfg.train.num_workers)
    model, optimizer = accelerator.prepare(model, optimizer)
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
        if accelerator.is_main_process:
            tensors, groups = optimizer_tensors(optimizer)
            state = {"step": step, "optimizer": groups, "scheduler": scheduler.state_dict(), "rng": rng_state()}
            stage.save(path, state, tensors)
            for old in checkpoints(out)[:-int(cfg.train.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    model.train()
    bar = tqdm(total=cfg.train.max_steps, initial=start, desc="train", unit="step", disable=not accelerator.is_main_process)
    t_data = t_step = 0.0
    window = {"loss": [], "accuracy": []}
    last = None
    it = iter(loader)
    for step in range(start, cfg.train.max_steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        with accelerator.autocast():
            result = model(batch)
        accelerator.backward(result["loss"])
        if cfg.train.grad_clip:
            accelerator.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        t_data, t_step = t_data + (t1 - t0), t_step + (t2 - t0)
        loss, acc = result["loss"].item(), result["accuracy"].item()
        window["loss"].append(loss)
        window["accuracy"].append(acc)
        if metrics:
            metrics.write(json.dumps({"step": step + 1, "loss": loss, "accuracy": acc, "lr": scheduler.get_last_lr()[0],
                                      "data_s": t1 - t0, "step_s": t2 - t0}) + "\n")
        bar.update(1)
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.max_steps:
            l, a = np.mean(window["loss"]), np.mean(window["accuracy"])
            sps = len(window["loss"]) * cfg.train.batch_size / max(t_step, 1e-9)
            bar.set_postfix(loss=f"{l:.4f}", acc=f"{a:.3f}", samples_s=f"{sps:.1f}", data=f"{t_data / max(t_step, 1e-9):.0%}")
            if tb:
                tb.add_scalar("train/loss", l, step + 1)
                tb.add_scalar(f"train/{stage.accuracy_name}", a, step + 1)
                tb.add_scalar("train/lr", scheduler.get_last_lr()[0], step + 1)
                tb.add_scalar("train/samples_per_s", sps, step + 1)
                tb.add_scalar("train/data_loading_share", t_data / max(t_step, 1e-9), step + 1)
            metrics.flush() if metrics else None
            window = {"loss": [], "accuracy": []}
            t_data = t_step = 0.0
        if (step + 1) % cfg.train.save_every == 0 or step + 1 == cfg.train.max_steps:
            last = save(step + 1)
            every = cfg.train.eval_every
            if (stage.evaluate and accelerator.is_main_process
                    and (step + 1 == cfg.train.max_steps or (every and (step + 1) % every == 0))):
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


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from policies.checkpoint import CheckpointError

    from .lerobot_format import DatasetError

    try:
        train(cfg)
    except (TrainError, DatasetError, CheckpointError, ValueError) as e:
        raise SystemExit(f"vla.train: {e}") from None


if __name__ == "__main__":
    main()
