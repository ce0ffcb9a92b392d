"""The policy's processor: every transform between the world's observations and actions and the
model's tensors, composed around the nn.Module (LeRobot's processor pipelines, openpi's data
transforms), so training, evaluation and serving cannot disagree on them.

    inputs:  camera images -> the model's size -> crop (random in training, centre otherwise)
             -> vision patches; instruction -> prompt -> token ids (+ image, state and action
             placeholders); state -> normalised; training targets: actions -> normalised and
             action token ids
    outputs: normalised actions or action token ids -> robot actions (un-normalised, gripper
             snapped to -1 / +1)

`KEY_MAPS` turn other clients' observation layouts into ours (openpi's LIBERO client).
Everything it needs travels with a checkpoint (policy.json's spec, action_stats.json,
state_stats.json, the backbone's tokenizer); processor.json describes the pipeline for readers.
"""

from __future__ import annotations

import numpy as np
import torch

from action_tokenizer import ActionStats, ActionTokenizer

from .backbone import ACTION_PAD_TOKEN, STATE_TOKEN, image_inputs, input_size, left_pad
from .transforms import StateNormalizer, camera_images, crop_and_resize, instruction_text, prompt_text

# other clients' flat observation keys -> our images by camera, state, instruction
KEY_MAPS = {
    "openpi_libero": {  # openpi's LIBERO example client (examples/libero/main.py)
        "images": {"agentview": "observation/image", "robot0_eye_in_hand": "observation/wrist_image"},
        "state": "observation/state", "instruction": "prompt",
        # it turns the raw render 180 degrees, we only flip it upside down: its images are ours mirrored
        "mirrored": True,
    },
}


def map_keys(msg: dict, key_map: dict) -> dict:
    """One observation in another client's layout (a KEY_MAPS entry) -> ours; ValueError names
    the keys it lacks."""
    wanted = [*key_map["images"].values(), key_map["state"], key_map["instruction"]]
    missing = [k for k in wanted if k not in msg]
    if missing:
        raise ValueError(f"observation lacks {missing} (obs_map expects {wanted})")
    images = {}
    for camera, key in key_map["images"].items():
        img = np.asarray(msg[key])
        images[camera] = np.ascontiguousarray(img[:, ::-1]) if key_map["mirrored"] and img.ndim == 3 else img
    return {"images": images, "state": msg[key_map["state"]], "instruction": msg[key_map["instruction"]]}


class PolicyProcessor:
    def __init__(self, spec, tokenizer, image_processor, action_tokenizer: ActionTokenizer, action_stats: ActionStats,
                 state_normalizer: StateNormalizer | None):
        self.spec, self.tokenizer, self.image_processor = spec, tokenizer, image_processor
        self.action_tokenizer, self.action_stats = action_tokenizer, action_stats
        self.state_normalizer = state_normalizer if spec.use_state else None
        if spec.use_state and state_normalizer is None:
            raise ValueError("use_state is true but no state statistics were given")
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.state_token_id = tokenizer.convert_tokens_to_ids(STATE_TOKEN)
        self.action_pad_id = tokenizer.convert_tokens_to_ids(ACTION_PAD_TOKEN)
        # prompt token ids per (instruction, image tokens): the processor's own (functools.lru_cache
        # on the method would keep every processor ever built alive)
        self._prompt_cache: dict[tuple, tuple[int, ...]] = {}

    # -- the prompt ------------------------------------------------------------------------------
    def _prompt_ids(self, instruction: str, image_tokens: tuple[int, ...]) -> tuple[int, ...]:
        key = (instruction, image_tokens)
        if key not in self._prompt_cache:
            if len(self._prompt_cache) >= 4096:  # a server seeing ever new instructions: stay bounded
                self._prompt_cache.clear()
            self._prompt_cache[key] = self._build_prompt_ids(instruction, image_tokens)
        return self._prompt_cache[key]

    def _build_prompt_ids(self, instruction: str, image_tokens: tuple[int, ...]) -> tuple[int, ...]:
        if self.spec.prompt == "compact":
            text = "".join(f"<|vision_start|>{'<|image_pad|>' * n}<|vision_end|>" for n in image_tokens)
            text += (STATE_TOKEN if self.spec.use_state else "") + instruction_text(instruction)
            return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        parts = ["<|im_start|>user\n"]
        for cam, n in zip(self.spec.cameras, image_tokens):
            parts.append(f"{cam}: <|vision_start|>{'<|image_pad|>' * n}<|vision_end|>\n")
        if self.spec.use_state:
            parts.append(f"state: {STATE_TOKEN}\n")
        parts.append(prompt_text(instruction) + "<|im_end|>\n<|im_start|>assistant\n")
        return tuple(self.tokenizer("".join(parts), add_special_tokens=False)["input_ids"])

    def used_token_ids(self, instructions: list[str]) -> list[int]:
        """Every token id this policy reads or writes for these instructions: their prompts, the
        special tokens and the action ids (what a compact checkpoint must keep)."""
        size = input_size(self.image_processor, self.spec.resolution, self.spec.resolution)
        per_image = size[0] * size[1] // (self.image_processor.patch_size * self.image_processor.merge_size) ** 2
        ids = {self.eos_id, self.pad_id, self.image_token_id, self.state_token_id, self.action_pad_id,
               *self.action_tokenizer.token_ids.tolist()}
        for text in instructions:
            ids.update(self._prompt_ids(text, (per_image,) * len(self.spec.cameras)))
        return sorted(ids)

    # -- inputs ------------------------------------------------------------------------------------
    def encode(self, images: dict, states, instructions: list[str], actions=None, action_is_pad=None,
               augment: bool = False, grasps=None) -> dict:
        """A batch of observations (images {camera: uint8[B, H, W, 3]}, states [B, S], B
        instructions, grasps [B] for a grasp_count policy) and, for training, target actions
        [B, H, 7] -> model inputs (left padded). augment: random crops (training); otherwise the
        centre crop."""
        spec, B = self.spec, len(instructions)
        flat = np.stack([img for b in range(B) for img in camera_images({c: images[c][b] for c in spec.cameras},
                                                                         spec.cameras, spec.resolution)])
        size = input_size(self.image_processor, spec.resolution, spec.resolution)[0]
        pix, per_image = image_inputs(self.image_processor, crop_and_resize(flat, spec.crop_scale, size, augment))
        n_cam = len(spec.cameras)
        if actions is not None:
            a = np.asarray(actions, np.float32).reshape(B, -1, spec.action_dim)
            target_ids = self.action_tokenizer.encode(a)
        suffixes = [()] * B
        if spec.head == "parallel":
            suffixes = [(self.action_pad_id,) * spec.num_queries] * B
        elif actions is not None:
            suffixes = [tuple(row.reshape(-1).tolist()) + (self.eos_id,) for row in target_ids]
        seqs = [self._prompt_ids(instructions[b], tuple(per_image[b * n_cam:(b + 1) * n_cam])) + suffixes[b]
                for b in range(B)]
        input_ids, mask = left_pad(seqs, self.pad_id)
        batch = {"input_ids": input_ids, "attention_mask": mask, "pixel_values": pix["pixel_values"],
                 "image_grid_thw": pix["image_grid_thw"], "mm_token_type_ids": (input_ids == self.image_token_id).int()}
        if spec.use_state:
            if states is None:
                raise ValueError("this policy reads the proprioceptive state: the observation needs 'state' [B, 8]")
            states = np.asarray(states, np.float32).reshape(B, -1)
            if spec.grasp_count:
                if grasps is None:
                    raise ValueError("this policy reads the episode's completed grasps: the observation needs 'grasps' "
                                     "(LiberoEnv reports it; a robot counts its own gripper close-open cycles)")
                states = np.concatenate([states, np.asarray(grasps, np.float32).reshape(B, 1)], 1)
            batch["state"] = torch.as_tensor(self.state_normalizer(states))
        if actions is not None:
            batch["target_norm"] = torch.as_tensor(np.clip(self.action_stats.normalize(a), -1, 1))
            batch["target_ids"] = torch.as_tensor(target_ids)
            pad = np.zeros(a.shape[:2], bool) if action_is_pad is None else np.asarray(action_is_pad, bool)
            batch["action_is_pad"] = torch.as_tensor(pad.reshape(B, -1))
        return batch

    # -- outputs -----------------------------------------------------------------------------------
    def decode(self, output: dict) -> np.ndarray:
        """The model's output ({"action_ids": int [B, H, 7]} or {"normalized": [B, H, 7] in -1..1})
        -> robot actions [B, H, 7], float32."""
        if "action_ids" in output:
            actions = self.action_tokenizer.decode(output["action_ids"])
        else:
            actions = self.action_stats.unnormalize(output["normalized"])
        if self.spec.binarize_gripper:  # a regressed 0.3 would half-close the fingers; the data has only -1 / +1
            binary = ~np.asarray(self.action_stats.mask, bool)
            actions[..., binary] = np.where(actions[..., binary] > 0, 1.0, -1.0)
        return actions.astype(np.float32)

    def describe(self) -> dict:
        """processor.json: the pipeline as a reader (or another framework) would rebuild it."""
        s = self.spec
        return {"inputs": [
            {"step": "images", "cameras": s.cameras, "recorded_size": s.camera_resolution, "resize_to": s.resolution,
             "resize": "bilinear", "crop_area": s.crop_scale, "crop": "random in training, centre otherwise",
             "model_input": input_size(self.image_processor, s.resolution, s.resolution)[0],
             "normalise": {"mean": list(self.image_processor.image_mean), "std": list(self.image_processor.image_std)}},
            {"step": "prompt", "format": s.prompt, "template": "chat: the VLM's chat template with camera names and "
             "'What action should the robot take to <instruction>?'; compact: images, state, instruction"},
            {"step": "state", "use": s.use_state, "normalise": "(state - mean) / std", "stats": "state_stats.json",
             "append": ["grasps: completed grasp-release cycles this episode"] if s.grasp_count else []},
            {"step": "action_targets", "normalise": "q01/q99 to -1..1, clipped", "stats": "action_stats.json",
             "tokens": f"{self.action_tokenizer.n_bins} bins, {s.action_token_mode} ids"}],
            "outputs": [{"step": "unnormalise", "stats": "action_stats.json"},
                        {"step": "gripper", "binarize": s.binarize_gripper, "values": [-1, 1]}],
            "chunk_size": s.chunk_size, "action_dim": s.action_dim}
