"""The VLA: tiny real Qwen-VL backbones, the three heads, training, checkpoints and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import load_config
from omegaconf import OmegaConf

from action_tokenizer import ActionStats
from policies import RandomPolicy, ScriptedPolicy, VLAPolicy
from policies.backbone import QWEN_TEXT_VOCAB, build_backbone
from policies.checkpoint import CheckpointError, load_model_from_checkpoint
from policies.transforms import StateNormalizer
from policies.vla_model import PolicySpec, VLAModel, extra_tokens
from vla.dataset.reader import LeRobotDataset
from vla.train import TrainError, train

TINY = ["model.vocab=bytes", "train.resolution=64", "train.num_threads=1", "train.eval_trials_per_task=0"]


def obs_batch(ds: LeRobotDataset, indices, cameras) -> dict:
    samples = [ds[i] for i in indices]
    return {"images": {c: np.stack([s["images"][c] for s in samples]) for c in cameras},
            "state": np.stack([s["state"] for s in samples]), "instruction": [s["task"] for s in samples]}


def tiny_model(family="qwen2_5_vl", vocab="bytes", **spec) -> VLAModel:
    spec = PolicySpec(**{"resolution": 64, **spec})
    cfg = OmegaConf.to_container(load_config(f"model=tiny_{family}").model)
    cfg["vocab"] = vocab
    acts = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    return VLAModel(build_backbone(cfg, extra_tokens(spec)), spec, ActionStats.from_actions(acts),
                    StateNormalizer(np.zeros(8), np.ones(8))).eval()


def random_obs(n=2, res=64, instructions=("pick up the bowl", "put the black bowl on the plate please")):
    rng = np.random.default_rng(1)
    return {"images": {c: rng.integers(0, 255, (n, res, res, 3), dtype=np.uint8) for c in ("agentview", "robot0_eye_in_hand")},
            "state": rng.normal(size=(n, 8)).astype(np.float32), "instruction": list(instructions[:n])}


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_tiny_backbones_predict_action_chunks(family):
    """Every head gives [B, H, 7] chunks that depend on the observation (other images, other
    actions) and repeat exactly for the same one."""
    obs = random_obs()
    other = {**obs, "images": {c: 255 - v for c, v in obs["images"].items()}}
    for head, output in (("tokens", "tokens"), ("parallel", "tokens"), ("parallel", "l1")):
        torch.manual_seed(0)
        policy = VLAPolicy(tiny_model(family, head=head, output=output, chunk_size=3))
        actions = policy.act(obs)
        assert actions.shape == (2, 3, 7) and actions.dtype == np.float32
        np.testing.assert_array_equal(policy.act(obs), actions)
        assert not np.array_equal(policy.act(other), actions), (head, output)


def test_real_qwen_vocabulary_layout():
    model = tiny_model(vocab="qwen")
    tok = model.tokenizer
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|image_pad|>"]) == [151643, 151644, 151655]
    assert tok.decode(tok("pick up the bowl")["input_ids"]) == "pick up the bowl"
    ids = model.processor.action_tokenizer.token_ids  # OpenVLA: the last 256 ordinary tokens
    assert ids[0] == QWEN_TEXT_VOCAB - 256 and ids[-1] == QWEN_TEXT_VOCAB - 1
    added = tiny_model(vocab="qwen", action_token_mode="added")
    assert added.processor.action_tokenizer.token_ids[0] == added.tokenizer.convert_tokens_to_ids("<|action_0|>")


def test_constrained_decoder_never_emits_a_non_action_id():
    model = tiny_model(chunk_size=2)  # random weights: most of its 800 ids are not action ids
    obs = random_obs()
    batch = model.processor.encode(obs["images"], obs["state"], obs["instruction"])
    free = model.lm.generate(**model._model_inputs(batch), max_new_tokens=14, min_new_tokens=14, do_sample=False,
                             pad_token_id=model.processor.pad_id)[:, -14:].numpy()
    allowed = set(model.processor.action_tokenizer.token_ids.tolist())
    assert not set(np.unique(free)) <= allowed, "unconstrained decoding should stray outside the action ids"
    ids = model.generate_action_ids(batch)
    assert ids.shape == (2, 14) and set(np.unique(ids)) <= allowed


def test_batched_actions_equal_one_at_a_time():
    for head in ("tokens", "parallel"):
        policy = VLAPolicy(tiny_model(head=head, output="tokens", chunk_size=2))
        obs = random_obs()
        both = policy.act(obs)
        for i in range(2):
            one = policy.act({"images": {c: v[i] for c, v in obs["images"].items()}, "state": obs["state"][i],
                              "instruction": obs["instruction"][i]})
            np.testing.assert_allclose(one[0], both[i], atol=1e-5)


@pytest.mark.slow
def test_tiny_model_overfits_two_episodes_and_reloads_identically(demo_dataset, tmp_path):
    cfg = load_config(*TINY, f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path / 'run'}",
                      "train.max_steps=700", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=20",
                      "train.save_every=700", "train.log_every=100")
    ckpt = train(cfg)
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean([r["loss"] for r in log[-10:]]) < 0.25 * np.mean([r["loss"] for r in log[:10]])

    policy = VLAPolicy.from_checkpoint(ckpt)
    model = policy.model
    ds = LeRobotDataset(demo_dataset, action_horizon=1, cameras=model.spec.cameras)
    correct = total = 0
    with torch.no_grad():  # teacher-forced action-token accuracy over the whole dataset
        for start in range(0, len(ds), 32):
            idx = range(start, min(start + 32, len(ds)))
            b = obs_batch(ds, idx, model.spec.cameras)
            batch = model.processor.encode(b["images"], b["state"], b["instruction"], actions=np.stack([ds[i]["action"] for i in idx]))
            acc = model(batch)["accuracy"].item()
            correct, total = correct + acc * len(idx), total + len(idx)
    assert correct / total > 0.95

    b = obs_batch(ds, [0, 60, 120], model.spec.cameras)
    again = VLAPolicy.from_checkpoint(ckpt).act(b)
    np.testing.assert_array_equal(policy.act(b), again)
    # and the actions are the demonstrations' (to within a bin or two of the tokenizer)
    target = np.stack([ds[i]["action"] for i in (0, 60, 120)])
    assert np.mean(np.abs(again - target) < 0.05) > 0.9


@pytest.mark.parametrize("output, lr, ratio", [("l1", 1e-3, 0.75), ("tokens", 3e-3, 0.85)])
def test_parallel_head_trains_and_reloads_identically(demo_dataset, tmp_path, output, lr, ratio):
    cfg = load_config(*TINY, "head=parallel", f"head.output={output}", "head.chunk_size=4",
                      f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path}", "train.max_steps=80",
                      f"train.lr={lr}", "train.save_every=80")
    ckpt = train(cfg)
    log = [json.loads(l)["loss"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(log[-10:]) < ratio * np.mean(log[:10])  # 256-way cross-entropy starts at ln 256 = 5.5
    ds = LeRobotDataset(demo_dataset, cameras=["agentview", "robot0_eye_in_hand"])
    b = obs_batch(ds, [3, 90], ["agentview", "robot0_eye_in_hand"])
    a1, a2 = VLAPolicy.from_checkpoint(ckpt).act(b), VLAPolicy.from_checkpoint(ckpt).act(b)
    assert a1.shape == (2, 4, 7)
    np.testing.assert_array_equal(a1, a2)


def test_training_resumes_after_a_kill_with_the_same_loss_curve(demo_dataset, tmp_path):
    args = [sys.executable, "-m", "vla.train", "~recipe", *TINY, f"train.dataset={demo_dataset}", "train.max_steps=40",
            "train.save_every=10", "train.log_every=5"]
    subprocess.run(args + [f"train.output_dir={tmp_path / 'whole'}"], check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + [f"train.output_dir={killed}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_000020" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its second checkpoint"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # resumed in two slices: `train.stop_at` ends an invocation early on the same schedule
    out = subprocess.run(args + [f"train.output_dir={killed}", "train.stop_at=30"], check=True, capture_output=True,
                         text=True).stdout
    assert "resuming from" in out and out.strip().endswith("step_000030")
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 30
    out = subprocess.run(args + [f"train.output_dir={killed}"], check=True, capture_output=True, text=True).stdout
    assert "resuming from" in out and out.strip().endswith("step_000040")

    whole = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    resumed = (killed / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if not k.endswith("_s")} for l in lines]
    assert strip(resumed) == strip(whole) and len(whole) == 40


def test_bad_checkpoints_and_configs_fail_clearly(demo_dataset, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model_from_checkpoint(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "policy.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model_from_checkpoint(tmp_path / "half")

    ckpt = train(load_config(*TINY, f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path / 'run'}",
                             "train.max_steps=2", "train.save_every=2"))
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        VLAPolicy.from_checkpoint(ckpt)

    with pytest.raises(TrainError, match="different model"):  # another model into the same run folder
        train(load_config(*TINY, "model=tiny_qwen3_vl", "model.vocab=bytes", f"train.dataset={demo_dataset}",
                          f"train.output_dir={tmp_path / 'run'}", "train.max_steps=4"))
    with pytest.raises(TrainError, match="vla.collect"):
        train(load_config(*TINY, f"train.dataset={tmp_path / 'absent'}", "train.collect_if_missing=false",
                          f"train.output_dir={tmp_path / 'x'}"))
    with pytest.raises(ValueError, match="head must be one of"):
        PolicySpec(head="diffusion")
    r = subprocess.run([sys.executable, "-m", "vla.train", "~recipe", *TINY, f"train.dataset={tmp_path / 'absent'}",
                        "train.collect_if_missing=false", f"train.output_dir={tmp_path / 'y'}"], capture_output=True, text=True)
    assert r.returncode != 0 and "vla.train: dataset" in r.stderr and "Traceback" not in r.stderr


def test_model_free_policies_follow_the_protocol():
    obs = random_obs()
    a = RandomPolicy(chunk_size=3).act(obs)
    assert a.shape == (2, 3, 7) and np.all(np.abs(a) <= 1) and set(np.unique(a[..., 6])) <= {-1.0, 1.0}

    class Constant:
        def __init__(self, v):
            self.v, self.resets = v, 0

        def reset(self):
            self.resets += 1

        def act(self, obs):
            assert obs["state"].shape == (8,) and obs["images"]["agentview"].shape == (64, 64, 3)
            return np.full(7, self.v)

    controllers = [Constant(0.1), Constant(-0.2)]
    policy = ScriptedPolicy(controllers)
    policy.reset()
    out = policy.act(obs)
    assert out.shape == (2, 1, 7) and out[0, 0, 0] == np.float32(0.1) and out[1, 0, 0] == np.float32(-0.2)
    assert [c.resets for c in controllers] == [1, 1]


def test_lora_trains_only_adapters_and_the_head(demo_dataset, tmp_path):
    ckpt = train(load_config(*TINY, "train.lora={r: 4, alpha: 8}", "train.freeze_vision=true", "train.max_steps=3",
                             "train.lr=1e-2", f"train.dataset={demo_dataset}", f"train.output_dir={tmp_path}"))
    trained = load_model_from_checkpoint(ckpt)
    fresh = build_backbone(OmegaConf.to_container(load_config(*TINY).model), extra_tokens(trained.spec), seed=0).model
    before = dict(fresh.named_parameters())
    changed = {n for n, p in trained.lm.named_parameters()
               if n.replace(".base_layer", "") in before and not torch.equal(p, before[n.replace(".base_layer", "")])}
    assert not changed, f"frozen backbone weights changed: {sorted(changed)[:3]}"
    lora = [p for n, p in trained.lm.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # lora_B starts at zero: it moved
    obs = random_obs()
    np.testing.assert_array_equal(VLAPolicy(trained).act(obs), VLAPolicy.from_checkpoint(ckpt).act(obs))


def test_pretrained_checkpoint_loads_from_a_local_folder(tmp_path):
    """The path a user's real (VST, XVR, Qwen) checkpoint takes: from_pretrained on a folder with
    config, weights, tokenizer and preprocessor files; here a tiny one saved by transformers."""
    cfg = OmegaConf.to_container(load_config("model=tiny_qwen2_5_vl").model)
    saved = build_backbone(cfg)
    for part in (saved.model, saved.tokenizer, saved.image_processor):
        part.save_pretrained(tmp_path)
    spec = PolicySpec(resolution=64)
    loaded = build_backbone({**cfg, "pretrained": str(tmp_path), "tiny": None}, extra_tokens(spec))
    assert loaded.text_vocab_size == QWEN_TEXT_VOCAB
    ids = torch.tensor([saved.tokenizer("pick up the bowl")["input_ids"]])
    with torch.no_grad():
        np.testing.assert_array_equal(saved.model(input_ids=ids).logits.numpy(), loaded.model(input_ids=ids).logits.numpy())
    acts = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    model = VLAModel(loaded, spec, ActionStats.from_actions(acts), StateNormalizer(np.zeros(8), np.ones(8))).eval()
    assert VLAPolicy(model).act(random_obs()).shape == (2, 1, 7)
    with pytest.raises(ValueError, match="cannot load model.pretrained"):
        build_backbone({**cfg, "pretrained": str(tmp_path / "missing"), "tiny": None})


def test_a_dropped_model_is_freed_after_encoding():
    """Nothing global keeps a policy alive (a method-level lru_cache once held every model built:
    DAgger rounds and evaluation sweeps grew by a model each)."""
    import gc
    import weakref

    model = tiny_model()
    obs = random_obs()
    model.processor.encode(obs["images"], obs["state"], obs["instruction"])
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


@pytest.mark.slow
def test_a_rerun_validates_a_newest_checkpoint_whose_validation_was_lost(demo_dataset, tmp_path, capsys):
    """A run killed while validating its last checkpoint (or right after saving it) validates it when
    rerun, instead of finishing with a checkpoint no validation ever saw."""
    args = [*TINY, f"train.dataset={demo_dataset}", "train.max_steps=4", "train.save_every=2", "train.eval_every=2",
            "train.eval_trials_per_task=1", "train.eval_layouts=random", "eval.tasks=[0]", "eval.max_steps=8",
            "eval.num_envs=1", "eval.save_videos=0", f"train.output_dir={tmp_path}"]
    train(load_config(*args))
    first, last = (tmp_path / "eval" / f"step_00000{n}" / "success.json" for n in (2, 4))
    assert first.is_file() and last.is_file()
    last.unlink()  # as if killed during the validation of step 4
    kept = first.stat().st_mtime_ns
    train(load_config(*args, "train.resume=true"))
    assert "step_000004 was not validated: validating it" in capsys.readouterr().out
    assert last.is_file() and json.loads(last.read_text())["episodes"] == 1
    assert first.stat().st_mtime_ns == kept  # older checkpoints are not validated again
