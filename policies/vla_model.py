"""The VLA: a Qwen-VL backbone and an action head.

Heads (`spec.head`):
- "tokens": OpenVLA. The prompt is followed by 7*H action tokens and the end token; the loss
  covers only those; decoding is autoregressive (KV cache) and constrained to the 256 action ids.
- "parallel": OpenVLA-OFT. The prompt is followed by 7*H placeholder tokens with learned
  embeddings that attend to each other both ways; one forward pass gives the whole chunk, read
  out either as action-token logits (`output: tokens`) or by an MLP regressing normalised
  actions under an L1 loss (`output: l1`). With `queries: steps` (L1 only) there is one
  placeholder per chunk step, regressing its 7 numbers: H instead of 7*H tokens.
Only the LM-head rows of the 256 action tokens (and the end token) are ever multiplied: with the
real 151k vocabulary the full head would dominate the cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

from action_tokenizer import ActionStats, ActionTokenizer, action_token_names

from .backbone import ACTION_PAD_TOKEN, STATE_TOKEN, Backbone
from .processor import PolicyProcessor
from .transforms import StateNormalizer

HEADS = ("tokens", "parallel")
OUTPUTS = ("tokens", "l1")
QUERIES = ("dims", "steps")  # parallel head: one placeholder per action number (OFT) or per chunk step
# chat: the VLM's chat template with camera names and a question (what a pretrained VLM expects);
# compact: images, state and the bare instruction, 33 fewer tokens per sample (a model trained from scratch)
PROMPTS = ("chat", "compact")


@dataclass
class PolicySpec:
    """What the policy reads and writes; saved with every checkpoint."""

    head: str = "tokens"
    output: str = "tokens"  # parallel head only: tokens | l1
    chunk_size: int = 1
    cameras: list[str] = field(default_factory=lambda: ["agentview", "robot0_eye_in_hand"])
    resolution: int = 128
    use_state: bool = True
    action_token_mode: str = "openvla"
    action_dim: int = 7
    render_quality: str | None = None  # the simulator render setting of the training images (None: unknown)
    # the size the training images were recorded at: evaluation renders at it and the images are
    # then resized to `resolution` exactly as in training (rendering at `resolution` would not match)
    camera_resolution: int | None = None
    crop_scale: float = 1.0  # area share of the image crop: random in training, the centre at inference
    binarize_gripper: bool = True  # un-normalised dimensions (the gripper) snap to -1 / +1, as OpenVLA's LIBERO eval does
    queries: str = "dims"  # parallel head: dims = chunk x 7 placeholders (OpenVLA-OFT), steps = chunk (L1 only)
    prompt: str = "chat"  # PROMPTS
    # the state token also carries the grasp-release cycles completed this episode (obs "grasps",
    # envs.robot_state.GraspCounter): a progress signal for multi-goal tasks
    grasp_count: bool = False

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {self.head!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"parallel head output must be one of {OUTPUTS}, not {self.output!r}")
        if self.head == "tokens" and self.output != "tokens":
            raise ValueError("the tokens head has token output only; output: l1 needs head: parallel")
        if self.queries not in QUERIES:
            raise ValueError(f"parallel head queries must be one of {QUERIES}, not {self.queries!r}")
        if self.queries == "steps" and (self.head, self.output) != ("parallel", "l1"):
            raise ValueError("queries: steps (one placeholder per chunk step) needs head: parallel with output: l1")
        if self.grasp_count and not self.use_state:
            raise ValueError("grasp_count rides on the state token: it needs use_state: true")
        if self.prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, not {self.prompt!r}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, not {self.chunk_size}")
        if not self.cameras:
            raise ValueError("cameras is empty: the policy needs at least one camera")
        if not 0.25 <= float(self.crop_scale) <= 1.0:
            raise ValueError(f"crop_scale must be in 0.25..1 (the share of the image area kept), not {self.crop_scale}")
        self.chunk_size, self.resolution, self.cameras = int(self.chunk_size), int(self.resolution), list(self.cameras)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def num_queries(self) -> int:
        """Action placeholders the parallel head appends to the prompt."""
        return self.chunk_size * (1 if self.queries == "steps" else self.action_dim)


def extra_tokens(spec: PolicySpec) -> list[str]:
    """Special tokens the backbone's tokenizer needs for this policy (before its model is built)."""
    added = action_token_names() if spec.action_token_mode == "added" else []
    return [STATE_TOKEN, ACTION_PAD_TOKEN] + added


class AllowedTokens(LogitsProcessor):
    """Constrained decoding: every id but the allowed ones (e.g. the 256 action ids) gets -inf."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __call__(self, input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.ids] = scores[:, self.ids]
        return masked


def _patch_embed_as_matmul(embed: nn.Module) -> None:
    """The Qwen vision towers embed patches with a Conv3d whose kernel equals its stride and its
    input: a matrix product over flattened patches, which CPU conv3d computes ~5x slower. Same
    weights (the checkpoint does not change), same result to float rounding."""
    proj = embed.proj
    if not isinstance(proj, nn.Conv3d) or tuple(proj.kernel_size) != tuple(proj.stride):
        return

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        w = proj.weight
        x = hidden_states.reshape(-1, w[0].numel()).to(w.dtype)
        return F.linear(x, w.reshape(w.shape[0], -1), proj.bias)

    embed.forward = forward


def _batch_equal_windows(attn: nn.Module) -> None:
    """The Qwen vision towers attend within windows (Qwen2.5-VL) or whole images; outside flash
    attention HF runs one attention call per window: 64 small calls per block for a batch of 32
    two-camera samples at 112 px. When every window has the same length (images of one size), one
    batched call over [windows, heads, length, dim] computes the same thing. Other cases (and
    flash attention, which takes the packed sequence itself) go through HF's forward unchanged."""
    import sys

    from transformers.utils.generic import is_flash_attention_requested

    inner = attn.forward
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision

    def forward(hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, position_embeddings=None, **kwargs):
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]
        if (is_flash_attention_requested(attn.config) or position_embeddings is None or not len(lengths)
                or bool((lengths != lengths[0]).any())):
            return inner(hidden_states, cu_seqlens, position_embeddings=position_embeddings, **kwargs)
        S, n, L = hidden_states.shape[0], len(lengths), int(lengths[0])
        q, k, v = attn.qkv(hidden_states).reshape(S, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = rotary(q, k, *position_embeddings)
        q, k, v = (t.reshape(n, L, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)  # no mask: each window attends to itself
        return attn.proj(out.transpose(1, 2).reshape(S, -1))

    attn.forward = forward


class VLAModel(nn.Module):
    def __init__(self, backbone: Backbone, spec: PolicySpec, action_stats: ActionStats,
                 state_normalizer: StateNormalizer | None = None):
        super().__init__()
        self.lm, self.spec, self.family = backbone.model, spec, backbone.family
        # the backbone's decoder layers and vision blocks: what FSDP wraps (accelerate reads this)
        self._no_split_modules = list(getattr(backbone.model, "_no_split_modules", None) or [])
        self.tokenizer, self.image_processor = backbone.tokenizer, backbone.image_processor
        self.text_vocab_size = backbone.text_vocab_size
        if action_stats.dim != spec.action_dim:
            raise ValueError(f"action statistics have {action_stats.dim} dims, the policy predicts {spec.action_dim}")
        vocab_size = self.text_vocab_size
        if spec.action_token_mode == "added":
            names = action_token_names()
            first, last = self.tokenizer.convert_tokens_to_ids([names[0], names[-1]])
            if first is None or last is None or last - first != 255 or first == self.tokenizer.unk_token_id:
                raise ValueError("added-mode action tokens are missing from the tokenizer: build the backbone "
                                 "with extra_tokens=extra_tokens(spec)")
            vocab_size = first
        action_tokenizer = ActionTokenizer(action_stats, mode=spec.action_token_mode, vocab_size=vocab_size)
        # the transforms around this module (training's collate, evaluation, serving): policies.processor
        self.processor = PolicyProcessor(spec, self.tokenizer, self.image_processor, action_tokenizer, action_stats,
                                         state_normalizer)
        p = self.processor
        # LM-head rows for the loss: the 256 action ids in ascending order, then the end token
        self.register_buffer("action_ids", torch.as_tensor(action_tokenizer.token_ids), persistent=False)
        hidden = self.lm.config.get_text_config().hidden_size
        if spec.use_state:
            self.state_proj = nn.Sequential(nn.Linear(p.state_normalizer.mean.shape[0], hidden), nn.GELU(),
                                            nn.Linear(hidden, hidden))
        if spec.head == "parallel":
            self.action_queries = nn.Parameter(torch.randn(spec.num_queries, hidden) * 0.02)
            if spec.output == "l1":
                per_query = spec.action_dim if spec.queries == "steps" else 1
                self.regressor = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(),
                                               nn.Linear(hidden, per_query))
        self._inject: dict[int, torch.Tensor] = {}
        self.lm.get_input_embeddings().register_forward_hook(self._inject_embeddings)
        for module in self.lm.modules():
            if type(module).__name__.endswith("VisionPatchEmbed"):
                _patch_embed_as_matmul(module)
            elif type(module).__name__.endswith("VisionAttention") and hasattr(module, "qkv"):
                _batch_equal_windows(module)

    # -- inputs ------------------------------------------------------------------------------
    def _inject_embeddings(self, module, args, out):
        """Put the projected state and the action queries where their placeholder tokens are."""
        if not self._inject:
            return out
        ids = args[0]
        out = out.clone()
        for token_id, rows in self._inject.items():
            mask = ids == token_id
            if mask.any():
                out[mask] = rows.to(out.dtype).reshape(-1, out.shape[-1])
        return out

    # -- forward -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.action_ids.device

    def _set_injections(self, batch: dict) -> None:
        self._inject = {}
        dev = self.device
        if self.spec.use_state:
            self._inject[self.processor.state_token_id] = self.state_proj(batch["state"].to(dev))
        if self.spec.head == "parallel":
            B = batch["input_ids"].shape[0]
            self._inject[self.processor.action_pad_id] = self.action_queries.unsqueeze(0).expand(B, -1, -1)

    def _model_inputs(self, batch: dict) -> dict:
        keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
        return {k: batch[k].to(self.device) for k in keys}

    def _parallel_hidden(self, batch: dict) -> torch.Tensor:
        """Hidden states of the action placeholders (the last positions: inputs are left padded)."""
        inputs = self._model_inputs(batch)
        ids, mask2d = inputs["input_ids"], inputs["attention_mask"]
        n = self.spec.num_queries
        B, L = ids.shape
        core = self.lm.model
        position_ids = core.get_rope_index(ids, inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
                                           attention_mask=mask2d)[0]
        # causal over the prompt; the action block sees the whole prompt and itself both ways
        i = torch.arange(L, device=ids.device)
        allowed = (i[None, :] <= i[:, None]) | ((i[:, None] >= L - n) & (i[None, :] >= L - n))
        allowed = (allowed[None] & mask2d.bool()[:, None, :]) | torch.eye(L, dtype=torch.bool, device=ids.device)
        dtype = self.lm.get_input_embeddings().weight.dtype
        attn = torch.zeros((B, 1, L, L), dtype=dtype, device=ids.device).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
        self._set_injections(batch)
        try:
            out = core(input_ids=ids, attention_mask=attn, position_ids=position_ids, pixel_values=inputs["pixel_values"],
                       image_grid_thw=inputs["image_grid_thw"], mm_token_type_ids=inputs["mm_token_type_ids"])
        finally:
            self._inject = {}
        return out.last_hidden_state[:, -n:]

    def _action_logits(self, hidden: torch.Tensor, with_eos: bool = False) -> torch.Tensor:
        rows = self.action_ids if not with_eos else torch.cat([self.action_ids, self.action_ids.new_tensor([self.processor.eos_id])])
        return hidden @ self.lm.get_output_embeddings().weight[rows].T

    def _regress(self, hidden: torch.Tensor) -> torch.Tensor:
        """output l1: normalised actions [B, chunk x 7] (per query one number, or with queries:
        steps one step's 7). The head's float32 weights read a bfloat16 backbone's hidden states
        too (inference runs without autocast)."""
        return self.regressor(hidden.to(self.action_queries.dtype)).flatten(1).float()

    def forward(self, batch: dict) -> dict:
        """Training loss and action-token accuracy for a batch from `encode(..., actions=...)`."""
        spec = self.spec
        n = spec.chunk_size * spec.action_dim
        valid = ~batch["action_is_pad"].to(self.device).repeat_interleave(spec.action_dim, dim=1)  # [B, n]
        bins = (batch["target_ids"].to(self.device).reshape(-1, n) - self.action_ids[0])
        if spec.head == "tokens":
            self._set_injections(batch)
            try:
                out = self.lm.model(**self._model_inputs(batch))
            finally:
                self._inject = {}
            hidden = out.last_hidden_state[:, -(n + 2):-1]  # the positions that predict actions + end
            logits = self._action_logits(hidden, with_eos=True)
            targets = torch.cat([bins, bins.new_full((bins.shape[0], 1), logits.shape[-1] - 1)], 1)
            weights = torch.cat([valid, valid.new_ones((valid.shape[0], 1))], 1).float()
            loss = (F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
                    * weights.flatten()).sum() / weights.sum()
            pred = logits[:, :n, :-1].argmax(-1)
        else:
            hidden = self._parallel_hidden(batch)
            if spec.output == "tokens":
                logits = self._action_logits(hidden)
                loss = (F.cross_entropy(logits.flatten(0, 1).float(), bins.flatten(), reduction="none")
                        * valid.flatten()).sum() / valid.sum()
                pred = logits.argmax(-1)
            else:
                values = self._regress(hidden)
                target = batch["target_norm"].to(self.device).reshape(-1, n)
                loss = ((values - target).abs() * valid).sum() / valid.sum()
                ids = self.processor.action_tokenizer.encode_normalized(values.detach().cpu().numpy().reshape(-1, spec.action_dim))
                pred = torch.as_tensor(ids.reshape(values.shape), device=self.device) - self.action_ids[0]
        accuracy = ((pred == bins) & valid).sum().float() / valid.sum()
        return {"loss": loss, "accuracy": accuracy.detach()}

    @torch.no_grad()
    def generate_action_ids(self, batch: dict) -> np.ndarray:
        """tokens head: greedy autoregressive decoding (KV cache) of 7*H ids, only action ids allowed."""
        n = self.spec.chunk_size * self.spec.action_dim
        self._set_injections(batch)
        try:
            out = self.lm.generate(**self._model_inputs(batch), max_new_tokens=n, min_new_tokens=n,
                                   do_sample=False, use_cache=True, pad_token_id=self.processor.pad_id,
                                   logits_processor=LogitsProcessorList([AllowedTokens(self.action_ids)]))
        finally:
            self._inject = {}
        return out[:, -n:].cpu().numpy()

    @torch.no_grad()
    def predict(self, batch: dict) -> dict:
        """For a batch from `processor.encode(...)` without actions: {"action_ids": [B, H, 7]}
        (token outputs) or {"normalized": [B, H, 7] in -1..1} (L1); processor.decode makes them actions."""
        spec = self.spec
        B = batch["input_ids"].shape[0]
        if spec.head == "tokens":
            return {"action_ids": self.generate_action_ids(batch).reshape(B, spec.chunk_size, spec.action_dim)}
        hidden = self._parallel_hidden(batch)
        if spec.output == "tokens":
            ids = (self._action_logits(hidden).argmax(-1) + self.action_ids[0]).cpu().numpy()
            return {"action_ids": ids.reshape(B, spec.chunk_size, spec.action_dim)}
        values = self._regress(hidden).clamp(-1, 1).cpu().numpy()
        return {"normalized": values.reshape(B, spec.chunk_size, spec.action_dim)}
