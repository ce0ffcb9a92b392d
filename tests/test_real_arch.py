"""The real Qwen2.5-VL-3B and Qwen3-VL-2B architectures (configs/model/arch/*.json, the published
config.json files) built through our factory without the hub, on the meta device: no weights are
allocated, so the full-size models build in seconds. Parameter counts are exact."""

import json

import numpy as np
import pytest
import torch
from conftest import load_config, real_model_cfg
from omegaconf import OmegaConf

from action_tokenizer import ActionStats
from policies import VLAPolicy
from policies.backbone import (QWEN_EMBEDDING_ROWS, QWEN_SPECIALS, QWEN_TEXT_VOCAB, architecture_file,
                               build_backbone, build_backbone_from_dir, save_tokenizer)
from policies.checkpoint import apply_lora
from policies.transforms import StateNormalizer
from policies.vla_model import PolicySpec, VLAModel, extra_tokens

# Backbone parameters (vision tower + language model; the LM head is tied to the embedding), the
# element counts of the published bf16 safetensors: Qwen2.5-VL-3B-Instruct 3,754,622,976 (824
# tensors; "3.75B" on the model card), Qwen3-VL-2B-Instruct 2,127,532,032 (625 tensors; the card
# says "2B"). Vision towers (with the merger, and Qwen3-VL's 3 deepstack mergers): 668,684,288 and
# 406,957,056. Both totals also follow by hand from the config.json files.
REAL = {
    "qwen2_5_vl_3b": dict(family="qwen2_5_vl", params=3_754_622_976, vision=668_684_288, layers=36, hidden=2048,
                          kv_dim=256, mlp=11008, patch=14),
    "qwen3_vl_2b": dict(family="qwen3_vl", params=2_127_532_032, vision=406_957_056, layers=28, hidden=2048,
                        kv_dim=1024, mlp=6144, patch=16),
}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def real_model(name: str, **spec) -> VLAModel:
    spec = PolicySpec(**spec)
    acts = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    with torch.device("meta"):  # accelerate's init_empty_weights would untie the LM head (transformers 5)
        backbone = build_backbone(real_model_cfg(name), extra_tokens(spec))
        return VLAModel(backbone, spec, ActionStats.from_actions(acts), StateNormalizer(np.zeros(8), np.ones(8)))


def backbone_params(lm) -> int:
    return sum(p.numel() for p in lm.parameters())  # shared (tied) parameters count once


@pytest.mark.parametrize("name", REAL)
def test_real_architecture_builds_with_both_heads_and_exact_size(name):
    want = REAL[name]
    for head, output in (("tokens", "tokens"), ("parallel", "l1")):
        model = real_model(name, head=head, output=output, chunk_size=8)
        lm, text = model.lm, model.lm.config.get_text_config()
        assert model.family == want["family"] and lm.config.model_type == want["family"]
        assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size) == (want["layers"], want["hidden"], want["mlp"])
        assert lm.get_input_embeddings().weight.shape == (QWEN_EMBEDDING_ROWS, want["hidden"])
        assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight  # tie_word_embeddings
        assert backbone_params(lm) == want["params"]
        assert sum(p.numel() for p in lm.model.visual.parameters()) == want["vision"]
        assert model.image_processor.patch_size == want["patch"] == lm.config.vision_config.patch_size
        if head == "parallel":
            assert model.action_queries.shape == (8 * 7, want["hidden"]) and model.regressor[1].in_features == want["hidden"]
        assert model.state_proj[0].out_features == want["hidden"]


@pytest.mark.parametrize("name", REAL)
def test_real_config_matches_our_tokenizer_and_action_ids(name):
    """The config's special ids are our tokenizer's; OpenVLA-mode action ids are the last 256
    ordinary BPE tokens, below Qwen's special tokens and inside the 151,936-row embedding; our
    placeholders and added-mode action tokens fit in the padding rows (no resize)."""
    for mode in ("openvla", "added"):
        model = real_model(name, action_token_mode=mode)
        cfg, tok = model.lm.config, model.tokenizer
        assert [cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id] == \
            tok.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"])
        assert cfg.get_text_config().eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
        assert model.text_vocab_size == QWEN_TEXT_VOCAB == tok.convert_tokens_to_ids(QWEN_SPECIALS[0])
        ids = model.processor.action_tokenizer.token_ids
        assert len(ids) == 256 and len(set(ids.tolist())) == 256
        assert model.lm.get_input_embeddings().weight.shape[0] == QWEN_EMBEDDING_ROWS  # not resized
        if mode == "openvla":
            assert ids.min() == 151_387 and ids.max() == 151_642 == QWEN_TEXT_VOCAB - 1
            assert min(tok.get_added_vocab().values()) == QWEN_TEXT_VOCAB  # every special token sits above them
        else:
            assert ids.min() > max(model.processor.state_token_id, model.processor.action_pad_id) and ids.max() < QWEN_EMBEDDING_ROWS
        assert max(model.processor.state_token_id, model.processor.action_pad_id, len(tok) - 1) < QWEN_EMBEDDING_ROWS


@pytest.mark.parametrize("name", REAL)
def test_lora_targets_every_language_model_projection_and_nothing_else(name):
    want = REAL[name]
    model = real_model(name)
    with torch.device("meta"):
        apply_lora(model, {"r": 32, "alpha": 16})
    adapted = {n.rsplit(".", 1)[0] for n, _ in model.lm.named_modules() if n.endswith(".lora_A")}
    expected = {f"model.language_model.layers.{i}.{'self_attn' if p.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}.{p}"
                for i in range(want["layers"]) for p in LORA_TARGETS}
    assert adapted == expected  # all 7 x layers exist in the real modules; none in the vision tower
    h, kv, m, r = want["hidden"], want["kv_dim"], want["mlp"], 32
    per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + m) * 3)  # q, o; k, v; gate, up, down
    trainable = {n: p.numel() for n, p in model.lm.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable) and sum(trainable.values()) == per_layer * want["layers"]
    assert backbone_params(model.lm) - sum(trainable.values()) == want["params"]


@pytest.mark.parametrize("name", REAL)
def test_architecture_round_trips_through_checkpoint_metadata(name, tmp_path):
    """What save_checkpoint writes to backbone/ (config, compact tokenizer recipe, image
    processor) rebuilds the same architecture, as load_model_from_checkpoint does."""
    model = real_model(name)
    model.lm.config.save_pretrained(tmp_path)
    save_tokenizer(model.tokenizer, tmp_path, compact=True)
    model.image_processor.save_pretrained(tmp_path)
    with torch.device("meta"):
        again = build_backbone_from_dir(tmp_path, model.family, model.text_vocab_size)
    assert again.model.config.to_diff_dict() == model.lm.config.to_diff_dict()
    assert backbone_params(again.model) == REAL[name]["params"]
    assert again.model.get_output_embeddings().weight is again.model.get_input_embeddings().weight
    assert again.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert again.image_processor.patch_size == model.image_processor.patch_size
    published = json.loads(architecture_file(real_model_cfg(name)["architecture"]).read_text())
    text = published.get("text_config", published)
    saved = again.model.config.get_text_config()
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "rms_norm_eps", "max_position_embeddings"):
        assert getattr(saved, key) == text[key], key
    rope = text.get("rope_scaling") or published["rope_scaling"]
    assert saved.rope_parameters["mrope_section"] == rope["mrope_section"]
    assert saved.rope_parameters["rope_theta"] == text["rope_theta"]


def test_pretrained_stays_the_default_and_bytes_vocab_is_refused():
    for name in REAL:
        cfg = OmegaConf.to_container(load_config(f"model={name}").model)
        assert cfg["pretrained"].startswith("Qwen/") and architecture_file(cfg["architecture"]).is_file()
    with pytest.raises(ValueError, match="model.vocab"):
        build_backbone({**real_model_cfg("qwen3_vl_2b"), "vocab": "bytes"})


def observations(n=2, res=64) -> dict:
    rng = np.random.default_rng(1)
    return {"images": {c: rng.integers(0, 255, (n, res, res, 3), dtype=np.uint8) for c in ("agentview", "robot0_eye_in_hand")},
            "state": rng.normal(size=(n, 8)).astype(np.float32), "instruction": ["pick up the black bowl"] * n}


def test_bfloat16_backbone_feeds_the_float32_regression_head():
    """A bf16 backbone (model.dtype=auto on a GPU) with the parallel L1 head: inference runs
    without autocast, so the float32 regressor must take the bf16 hidden states."""
    spec = PolicySpec(resolution=64, head="parallel", output="l1", chunk_size=2)
    cfg = {**OmegaConf.to_container(load_config("model=tiny_qwen3_vl").model), "vocab": "bytes", "dtype": "bfloat16"}
    acts = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    model = VLAModel(build_backbone(cfg, extra_tokens(spec)), spec, ActionStats.from_actions(acts),
                     StateNormalizer(np.zeros(8), np.ones(8))).eval()
    assert model.lm.dtype == torch.bfloat16 and model.regressor[1].weight.dtype == torch.float32
    obs = observations()
    assert VLAPolicy(model).act(obs).shape == (2, 2, 7)
    batch = model.processor.encode(obs["images"], obs["state"], obs["instruction"], actions=np.zeros((2, 2, 7), np.float32))
    assert torch.isfinite(model(batch)["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_full_size_real_architecture_takes_a_lora_step_on_cpu(name):
    """The real architecture with random weights in bf16 (~4-8 GB; fp32 needs twice that):
    one LoRA training step with the parallel L1 head, then actions. ~45 s each on 2 cores."""
    spec = PolicySpec(resolution=64, head="parallel", output="l1", chunk_size=2)
    cfg = {**real_model_cfg(name), "dtype": "bfloat16"}
    acts = np.random.default_rng(0).uniform(-1, 1, (64, 7)).astype(np.float32)
    model = VLAModel(build_backbone(cfg, extra_tokens(spec)), spec, ActionStats.from_actions(acts),
                     StateNormalizer(np.zeros(8), np.ones(8)))
    assert backbone_params(model.lm) == REAL[name]["params"]
    apply_lora(model, {"r": 16})
    obs = observations()
    batch = model.processor.encode(obs["images"], obs["state"], obs["instruction"], actions=np.zeros((2, 2, 7), np.float32))
    model.train()
    loss = model(batch)["loss"]
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(p.grad is not None for p in trainable if p.dim() > 0)
    torch.optim.AdamW(trainable, lr=1e-3).step()
    assert VLAPolicy(model.eval()).act(obs).shape == (2, 2, 7)
