"""Episode videos: every camera side by side, the instruction and the outcome written on top."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def compose_frame(images: dict, text: str) -> np.ndarray:
    row = np.concatenate([images[c] for c in images], axis=1)
    band = np.zeros((14, row.shape[1], 3), np.uint8)
    canvas = Image.fromarray(np.concatenate([band, row], axis=0))
    ImageDraw.Draw(canvas).text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(canvas)


def write_video(path: Path, frames: list[dict], instruction: str, success: bool, fps: int = 20) -> Path:
    import av

    label = f"{'SUCCESS' if success else 'FAILURE'}: {instruction}"
    images = [compose_frame(f, label) for f in frames]
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
