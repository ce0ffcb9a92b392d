"""The observation transforms shared by training, evaluation and serving: camera images to the
model's resolution, state normalisation, the prompt. One place, so that what the model saw in
training is what it sees on the robot."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PROMPT = "What action should the robot take to {instruction}?"


def instruction_text(instruction: str) -> str:
    return instruction.strip().rstrip(".").lower()


def prompt_text(instruction: str) -> str:
    return PROMPT.format(instruction=instruction_text(instruction))


def stack_observations(observations: list[dict], cameras: list[str] | None = None) -> dict:
    """Single observations -> one batch (leading axis B) as Policy.act takes it; the server and the
    eval engine both batch this way. The scripted expert's action (a simulator hint) rides along
    when every observation carries one."""
    cameras = list(observations[0]["images"]) if cameras is None else list(cameras)
    batch = {"images": {c: np.stack([o["images"][c] for o in observations]) for c in cameras},
             "state": np.stack([o["state"] for o in observations]),
             "instruction": [o["instruction"] for o in observations]}
    if all("grasps" in o for o in observations):
        batch["grasps"] = np.array([int(o["grasps"]) for o in observations])
    if all("expert_action" in o for o in observations):
        batch["expert_action"] = [o["expert_action"] for o in observations]
    return batch


def camera_images(images: dict, cameras: list[str], resolution: int) -> list[np.ndarray]:
    """The named cameras' upright uint8 [H, W, 3] images, resized (bilinear) to resolution²."""
    out = []
    for cam in cameras:
        if cam not in images:
            raise KeyError(f"observation has no image from camera {cam!r} (it has {sorted(images)})")
        img = np.asarray(images[cam])
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"camera {cam!r}: expected uint8 [H, W, 3], got {img.dtype} {img.shape}")
        out.append(resize_square(img, resolution))
    return out


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3], bilinear (PIL); unchanged when already that size."""
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def crop_and_resize(images: np.ndarray, crop_scale: float, size: int, augment: bool) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, size, size] in 0..255: a square crop of `crop_scale` of
    the image's area, random per image when `augment` (training), else the centre (evaluation,
    serving), resized (bilinear, antialiased) to the model's input size. OpenVLA-OFT trains on
    random 90%-area crops and evaluates on the centre one."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    n, _, h, w = x.shape
    if crop_scale < 1.0:
        ch, cw = max(1, round(h * crop_scale ** 0.5)), max(1, round(w * crop_scale ** 0.5))
        if augment:  # numpy's global RNG: training checkpoints save it, so a resumed run crops the same
            tops, lefts = np.random.randint(0, h - ch + 1, n), np.random.randint(0, w - cw + 1, n)
            x = torch.stack([x[i, :, t:t + ch, l:l + cw] for i, (t, l) in enumerate(zip(tops, lefts))])
        else:
            t, l = (h - ch) // 2, (w - cw) // 2
            x = x[:, :, t:t + ch, l:l + cw]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 255)
    return x


class StateNormalizer:
    """Proprioceptive state to zero mean, unit variance (statistics of the training data)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.maximum(np.asarray(std, np.float32), 1e-6)

    def __call__(self, state) -> np.ndarray:
        s = np.asarray(state, np.float32)
        if s.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"state has {s.shape[-1]} values, the policy was trained on {self.mean.shape[0]}")
        return (s - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}
