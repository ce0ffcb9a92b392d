"""Write a spatial VQA dataset from LIBERO scenes: parquet shards of records plus PNG images.

python -m vla.spatial.generate suite=libero_spatial samples=2000

Layout: <out>/shards/shard-NNNNN.parquet (one row per question: id, split, task_type, question,
answer, choices, images, suite, task_index, scene_seed, gt as JSON) and <out>/images/shard-NNNNN/.
Shard n holds `scenes_per_shard` random layouts of task n % num_tasks; the split is by task, so
test scenes are never seen in training. A shard file is written atomically once complete, so a
killed run resumes at the first missing shard with no duplicate record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from .questions import TASK_TYPES, scene_questions
from .scene import add_camera_motion, capture, randomize

COLUMNS = ("id", "split", "task_type", "question", "answer", "choices", "images", "suite", "task_index", "scene_seed", "gt")


def split_of(task_index: int, test_every: int) -> str:
    return "test" if task_index % test_every == test_every - 1 else "train"


def shard_path(out: Path, n: int) -> Path:
    return out / "shards" / f"shard-{n:05d}.parquet"


def generate_shard(env, cfg, suite: str, task_index: int, n: int, out: Path) -> list[dict]:
    rows = []
    task_types = tuple(cfg.task_types) if cfg.get("task_types") else TASK_TYPES
    image_dir = out / "images" / f"shard-{n:05d}"
    image_dir.mkdir(parents=True, exist_ok=True)
    for s in range(cfg.scenes_per_shard):
        seed = int(np.random.SeedSequence([cfg.seed, n, s]).generate_state(1)[0])
        rng = np.random.default_rng(seed)
        randomize(env, rng, joint_noise=cfg.joint_noise)
        scene = capture(env, suite, task_index, seed, cfg.resolution)
        if "camera_motion" in task_types:  # one more render per scene
            add_camera_motion(env, scene, rng, cfg.resolution)
        for q in scene_questions(scene, rng, task_types):
            rid = f"{n:05d}-{len(rows):04d}"
            paths = []
            for i, image in enumerate(q.pop("images")):
                path = image_dir / f"{rid}_{i}.png"
                Image.fromarray(image).save(path)
                paths.append(str(path.relative_to(out)))
            if "mask" in q:  # a pointing answer's object mask, what it is scored against
                path = image_dir / f"{rid}_mask.png"
                Image.fromarray(q.pop("mask").astype(np.uint8) * 255).save(path)
                q["gt"]["mask"] = str(path.relative_to(out))
            rows.append({"id": rid, "split": split_of(task_index, cfg.test_every), **q, "images": paths, "suite": suite,
                         "task_index": task_index, "scene_seed": seed, "gt": json.dumps(q["gt"])})
    return rows


def write_shard(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: r[k] for k in COLUMNS} for r in rows])
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_records(root: str | Path, split: str | None = None) -> list[dict]:
    """All records (images as paths relative to root), optionally one split."""
    root = Path(root)
    files = sorted((root / "shards").glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no spatial dataset at {root} (expected shards/shard-*.parquet); "
                                f"create one with: python -m vla.spatial.generate out={root}")
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    for r in rows:
        r["gt"] = json.loads(r["gt"])
    return [r for r in rows if split is None or r["split"] == split]


def load_images(root: str | Path, record: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(Path(root) / p).convert("RGB")) for p in record["images"]]


def load_mask(root: str | Path, record: dict) -> np.ndarray | None:
    """The boolean object mask a pointing answer is scored against (None for other questions)."""
    path = record["gt"].get("mask")
    return None if path is None else np.asarray(Image.open(Path(root) / path)) > 127


def generate(cfg: DictConfig) -> Path:
    from envs.libero_env import LiberoEnv
    from envs.suites import get_suite

    unknown = sorted(set(cfg.get("task_types") or ()) - set(TASK_TYPES))
    if unknown:
        raise ValueError(f"task_types: unknown question types {unknown}; known: {list(TASK_TYPES)}")
    suite = get_suite(cfg.suite.name)
    out = Path(cfg.out)
    have = 0
    n = 0
    while shard_path(out, n).exists():
        have += pq.ParquetFile(shard_path(out, n)).metadata.num_rows
        n += 1
    bar = tqdm(total=cfg.samples, initial=min(have, cfg.samples), desc=f"spatial {suite.name}", unit="q")
    while have < cfg.samples:
        task_index = n % len(suite.tasks)
        env = LiberoEnv(suite, task_index, cameras=["agentview"], resolution=cfg.resolution)
        env.reset(seed=cfg.seed)
        rows = generate_shard(env, cfg, suite.name, task_index, n, out)
        env.close()
        write_shard(shard_path(out, n), rows)
        have += len(rows)
        n += 1
        bar.update(len(rows))
    bar.close()
    records = read_records(out)
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "test")}
    print(f"spatial dataset: {out} ({len(records)} records: {counts['train']} train, {counts['test']} test)")
    return out


@hydra.main(config_path="../../configs", config_name="spatial", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        generate(cfg)
    except ValueError as e:
        raise SystemExit(f"vla.spatial.generate: {e}") from None


if __name__ == "__main__":
    main()
