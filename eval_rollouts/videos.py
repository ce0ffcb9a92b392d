"""Episode videos: every camera side by side, scaled up to a watchable size, under a caption band
holding the whole instruction (wrapped) and the outcome."""

from __future__ import annotations

import textwrap
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_CAMERA_PX = 256  # each camera is shown at least this tall (nearest-neighbour: pixels stay pixels)
FONT_PX = 16
LINE_PX = FONT_PX + 4
OUTCOME_COLOUR = {True: (80, 220, 100), False: (240, 90, 80)}


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_PX)


def caption_lines(text: str, width_px: int) -> list[str]:
    """`text` wrapped into lines that each fit `width_px` in the caption font."""
    font, chars = _font(), max(8, width_px // 6)
    while True:
        lines = textwrap.wrap(text, chars) or [""]
        if chars <= 8 or all(font.getlength(line) <= width_px - 8 for line in lines):
            return lines
        chars -= 2


def compose_frame(images: dict, outcome: str, instruction: str, success: bool | None = None) -> np.ndarray:
    row = np.concatenate([images[c] for c in images], axis=1)
    scale = max(1, -(-MIN_CAMERA_PX // row.shape[0]))  # ceil
    row = row.repeat(scale, axis=0).repeat(scale, axis=1)
    lines = caption_lines(instruction, row.shape[1])
    band = np.zeros((LINE_PX * (len(lines) + 1) + 6, row.shape[1], 3), np.uint8)
    canvas = Image.fromarray(np.concatenate([band, row], axis=0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), outcome, fill=OUTCOME_COLOUR.get(success, (255, 255, 255)), font=_font())
    for k, line in enumerate(lines):
        draw.text((4, 3 + LINE_PX * (k + 1)), line, fill=(255, 255, 255), font=_font())
    return np.asarray(canvas)


def write_video(path: Path, frames: list[dict], instruction: str, success: bool, fps: int = 20) -> Path:
    import av

    outcome = f"{'SUCCESS' if success else 'FAILURE'} after {len(frames) - 1} steps"
    images = [compose_frame(f, outcome, instruction, success) for f in frames]
    h, w = images[0].shape[:2]
    h, w = h + h % 2, w + w % 2  # yuv420p needs even sizes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for img in images:
            padded = np.zeros((h, w, 3), np.uint8)
            padded[: img.shape[0], : img.shape[1]] = img
            for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    return path
