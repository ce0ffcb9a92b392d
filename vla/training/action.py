"""The stage=action training: a VLA policy (backbone + head) on a LeRobotDataset's action chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .loop import Stage, TrainError


def ensure_dataset(cfg: DictConfig) -> Path | list[Path]:
    """train.dataset's folder (collected first if missing and allowed), or its list of folders."""
    if OmegaConf.is_list(cfg.train.dataset):  # several datasets trained on as one: each must exist
        roots = [Path(r) for r in cfg.train.dataset]
        missing = [str(r) for r in roots if not (r / "meta" / "info.json").is_file()]
        if missing:
            raise TrainError(f"train.dataset lists folders that hold no dataset: {missing}")
        return roots
    root = Path(cfg.train.dataset)
    if (root / "meta" / "info.json").is_file():
        return root
    if not cfg.train.collect_if_missing:
        raise TrainError(f"dataset {root} not found; collect it with `python -m vla.collect suite={cfg.suite.name} "
                         f"episodes_per_task=N out={root}` or point train.dataset at a LeRobotDataset v3.0 folder")
    from ..dataset.collection import collect_demos

    tasks = cfg.train.get("tasks")
    print(f"dataset {root} not found: collecting {cfg.train.collect_episodes_per_task} scripted episodes per task "
          f"({'tasks ' + str(list(tasks)) if tasks is not None else 'every task'}) first")
    collect_demos(cfg.suite.name, root, cfg.train.collect_episodes_per_task, list(cfg.train.cameras),
                  cfg.train.resolution, tasks=None if tasks is None else list(tasks), seed=cfg.seed,
                  workers=int(cfg.train.get("collect_workers", 1)))
    return root


def make_collate(model, rewrites: float = 0.0, seed: int = 0):
    """Samples -> a training batch; rewrites: the share of instructions reworded by
    envs.language's training rules (train.instruction_rewrites), fixed per frame."""
    from envs.language import training_instruction

    def collate(samples: list[dict]) -> dict:
        cams = model.spec.cameras
        tasks = [training_instruction(s["task"], rewrites, [seed, s["episode_index"], s["frame_index"]]) for s in samples]
        return model.processor.encode({c: np.stack([s["images"][c] for s in samples]) for c in cams},
                            np.stack([s["state"] for s in samples]), tasks,
                            actions=np.stack([s["action"] for s in samples]),
                            action_is_pad=np.stack([s["action_is_pad"] for s in samples]), augment=True,
                            grasps=np.array([s["grasps"] for s in samples]))
    return collate


def build_model(cfg: DictConfig, dataset, normalization_from: Path | None = None):
    """The policy for `dataset`'s actions; normalization_from: a checkpoint whose action and state
    normalisation to keep (a warm start must see actions scaled as its weights learned them)."""
    from action_tokenizer import ActionStats
    from policies.backbone import build_backbone
    from policies.checkpoint import load_normalization
    from policies.transforms import StateNormalizer
    from policies.vla_model import PolicySpec, VLAModel, extra_tokens

    spec = PolicySpec(head=cfg.head.name, output=cfg.head.output, chunk_size=cfg.head.chunk_size,
                      queries=cfg.head.get("queries", "dims"), prompt=cfg.train.get("prompt", "chat"),
                      cameras=list(cfg.train.cameras), resolution=cfg.train.resolution, use_state=cfg.train.use_state,
                      action_token_mode=cfg.model.action_token_mode, action_dim=dataset.actions.shape[1],
                      render_quality=dataset.info.get("vla", {}).get("render_quality"), crop_scale=cfg.train.crop_scale,
                      camera_resolution=dataset.info["features"][f"observation.images.{cfg.train.cameras[0]}"]["shape"][0],
                      grasp_count=bool(cfg.train.get("grasp_count", False)))
    mask = np.ones(spec.action_dim, bool)
    mask[-1] = False  # the gripper (-1 / +1) is not normalised, as in OpenVLA
    stats = ActionStats.from_actions(dataset.actions, mask=mask)
    states = np.concatenate([dataset.states, dataset.grasps[:, None]], 1) if spec.grasp_count else dataset.states
    state = StateNormalizer(states.mean(0), states.std(0)) if spec.use_state else None
    if normalization_from is not None:
        stats, trained_state = load_normalization(normalization_from)
        state = trained_state if spec.use_state else None
    backbone = build_backbone(OmegaConf.to_container(cfg.model, resolve=True), extra_tokens(spec), seed=cfg.seed)
    model = VLAModel(backbone, spec, stats, state)
    lora = lora_settings(cfg)
    set_trainable(model, cfg, lora)
    return model, lora


def lora_settings(cfg: DictConfig) -> dict | None:
    """train.lora as a plain dict (peft's LoraConfig fields by our names), or None: no adapters."""
    return OmegaConf.to_container(cfg.train.lora, resolve=True) if cfg.train.lora else None


def set_trainable(model, cfg: DictConfig, lora: dict | None) -> None:
    """Which weights train: LoRA adapters (others frozen) when `lora`, then train.freeze_embeddings
    and train.freeze_vision."""
    from policies.checkpoint import apply_lora

    apply_lora(model, lora)
    if cfg.train.freeze_embeddings:  # text-token rows: most never occur, yet AdamW would update all 151k
        model.lm.get_input_embeddings().weight.requires_grad_(False)
    if cfg.train.freeze_vision:
        for p in model.lm.model.visual.parameters():
            p.requires_grad = False


def action_stage(cfg: DictConfig, config_yaml: str, out: Path) -> Stage:
    import torch

    from policies.checkpoint import save_checkpoint

    from ..dataset.reader import open_dataset

    dataset = open_dataset(ensure_dataset(cfg), action_horizon=cfg.head.chunk_size, cameras=list(cfg.train.cameras))
    if cfg.train.get("image_cache_gb"):
        dataset.keep_images(cfg.train.resolution, int(float(cfg.train.image_cache_gb) * 2**30))
    shortest = min(e["length"] for e in dataset.episodes)
    if cfg.head.chunk_size > shortest:
        raise TrainError(f"head.chunk_size={cfg.head.chunk_size} is longer than the dataset's shortest episode "
                         f"({shortest} frames in {dataset.root}): choose a chunk of at most {shortest} steps")
    torch.manual_seed(cfg.seed)
    init = Path(cfg.train.init_from) if cfg.train.init_from else None
    if init is not None and not (init / "model.safetensors").is_file():
        raise TrainError(f"train.init_from={init}: no checkpoint there (model.safetensors missing)")
    model, lora = build_model(cfg, dataset, normalization_from=init)
    cotrain = SpatialCoTraining(cfg, model) if cfg.train.cotrain_spatial else None
    if init is not None:  # warm start: a trained policy's weights, a new optimiser
        warm_start(model, init, cotrain)
    from envs.language import vocabulary

    rewrites = float(cfg.train.get("instruction_rewrites", 0.0))
    # frozen text embeddings: checkpoints keep only the rows the training prompts use (a few MB)
    vocab_rows = None
    if cfg.train.freeze_embeddings and not lora:
        texts = list(dataset.tasks) + (vocabulary("train") if rewrites else [])
        vocab_rows = sorted(set(model.processor.used_token_ids(texts)) | (cotrain.token_ids if cotrain else set()))

    def save(path: Path, state: dict, tensors: dict, weights: dict | None) -> None:
        if cotrain:
            cotrain.vqa.head_to_lm()  # its answer rows travel in the policy's LM head
        save_checkpoint(path, model, config_yaml, lora=lora, trainer_state=state, optimizer_tensors=tensors,
                        vocab_rows=vocab_rows, weights=weights, tasks=list(dataset.tasks))

    def evaluate(path: Path) -> dict:
        from ..eval import evaluate as run_eval

        evaluation = {"policy": "checkpoint", "checkpoint": str(path), "trials_per_task": cfg.train.eval_trials_per_task,
                      "layouts": cfg.train.eval_layouts, "out": str(out / "eval" / path.name)}
        if cfg.train.get("tasks") is not None:  # the tasks it trained on
            evaluation["tasks"] = list(cfg.train.tasks)
        ecfg = OmegaConf.merge(cfg, {"eval": evaluation})
        return {f"eval/success_rate_{cfg.train.eval_layouts}_layouts": run_eval(ecfg)["success_rate"]}

    summary = f"head {cfg.head.name}/{cfg.head.output}, chunk {cfg.head.chunk_size}; dataset {dataset.root}: {len(dataset)} frames"
    return Stage(
        cotrain.model if cotrain else model, dataset, make_collate(model, rewrites, cfg.seed), save=save,
        # the frozen vocabulary rows a compact checkpoint leaves out stay as this seeded model has them
        load=lambda path: resume_weights(model, path, cotrain),
        summary=summary + (f"; {cotrain.summary}" if cotrain else ""),
        accuracy_name="action_token_accuracy", evaluate=evaluate if cfg.train.eval_trials_per_task else None,
        extra_inputs=cotrain.inputs if cotrain else None, shardable=cotrain is None)


def resume_weights(model, path: Path, cotrain: "SpatialCoTraining | None" = None, skip: set[str] = frozenset()) -> None:
    """A checkpoint's weights into the model (policies.checkpoint.load_weights: skip);
    TrainError, naming what differs, when they do not fit it."""
    from policies.checkpoint import load_weights

    try:
        missing, unexpected = load_weights(model, path / "model.safetensors", skip=skip)
    except RuntimeError as e:  # torch's size mismatch: the backbone's sizes differ
        raise TrainError(f"{path} has other backbone sizes than this run's model "
                         f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
    missing = [k for k in missing if k not in skip]
    if missing or unexpected:
        raise TrainError(f"{path} does not match this run's model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if cotrain:
        cotrain.vqa.head_from_lm()


HEAD_PARAMETERS = ("action_queries", "regressor.", "state_proj.")  # the policy's own layers around the backbone


def warm_start(model, path: Path, cotrain: "SpatialCoTraining | None" = None) -> None:
    """train.init_from: every weight of the checkpoint, except head layers whose shape this run
    changed (e.g. head.queries=steps from a dims policy): those start fresh, and it says so. The
    backbone must match exactly (same model sizes). Vocabulary rows the checkpoint lacks (words of
    new instructions) keep the fresh model's values."""
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    own = model.state_dict()
    changed = {k for k, shape in shapes.items()
               if k.startswith(HEAD_PARAMETERS) and k in own and tuple(own[k].shape) != shape}
    if changed:
        print(f"train.init_from={path}: head layers {sorted(changed)} start fresh (this run changed their shape)")
    resume_weights(model, path, cotrain, skip=changed)


class CoTrained(torch.nn.Module):
    """The policy with spatial VQA mixed in: each step's loss is the action loss plus `weight` x
    the answer loss on that step's spatial questions, through the same backbone (VST and XVR
    co-train so; their action loss is a token cross-entropy like the answers', ours an L1 an
    order of magnitude smaller, hence the weight)."""

    def __init__(self, policy, vqa, weight: float = 1.0):
        super().__init__()
        self.policy, self.vqa, self.weight = policy, vqa, weight

    def forward(self, batch: dict) -> dict:
        batch = dict(batch)
        spatial = self.vqa(batch.pop("spatial"))
        action = self.policy(batch)
        return {"loss": action["loss"] + self.weight * spatial["loss"], "accuracy": action["accuracy"],
                "action_loss": action["loss"].detach(), "spatial_loss": spatial["loss"].detach(),
                "spatial_answer_accuracy": spatial["accuracy"]}


class SpatialCoTraining:
    """train.cotrain_spatial=f: round(f * train.batch_size) questions from the training split of
    train.spatial_dataset join every action step (on top of the full action batch)."""

    def __init__(self, cfg: DictConfig, policy):
        from policies.backbone import Backbone

        from ..spatial.generate import read_records
        from ..spatial.model import SpatialSamples, SpatialVQA, answer_texts

        fraction = float(cfg.train.cotrain_spatial)
        if not 0 < fraction <= 1:
            raise TrainError(f"train.cotrain_spatial={cfg.train.cotrain_spatial}: give a fraction of the batch in (0, 1], or 0 for none")
        if not cfg.train.spatial_loss_weight > 0:
            raise TrainError(f"train.spatial_loss_weight={cfg.train.spatial_loss_weight}: give a positive weight")
        try:
            records = read_records(cfg.train.spatial_dataset, "train")
        except FileNotFoundError as e:
            raise TrainError(f"train.spatial_dataset: {e}") from None
        if not records:
            raise TrainError(f"train.spatial_dataset={cfg.train.spatial_dataset} has no training-split questions")
        backbone = Backbone(policy.lm, policy.tokenizer, policy.image_processor, policy.family, policy.text_vocab_size)
        self.vqa = SpatialVQA(backbone, answer_texts(records))
        self.model = CoTrained(policy, self.vqa, float(cfg.train.spatial_loss_weight))
        self.samples = SpatialSamples(cfg.train.spatial_dataset, records, cfg.train.resolution)
        self.per_step = max(1, round(fraction * cfg.train.batch_size))
        self.seed = cfg.seed + 1  # its own sample order, independent of the frames'
        self.token_ids = self.vqa.used_token_ids(records)
        self.summary = (f"co-training with {self.per_step} spatial questions per step from {len(records)} "
                        f"({self.samples.root}), answer loss x {cfg.train.spatial_loss_weight}")

    def inputs(self, step: int) -> dict:
        from .loop import step_indices

        picks = step_indices(len(self.samples), self.per_step, self.seed, step)
        return {"spatial": self.vqa.encode([self.samples[i] for i in picks])}
