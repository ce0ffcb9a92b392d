"""256-bin action tokenizer with OpenVLA's exact binning and token-id mapping.

Pipeline: action --normalise(q01/q99)--> [-1, 1] --digitize(edges)--> bin index 1..n_bins --> token id.
Decoding maps a token id to the centre of its bin (there are n_bins - 1 centres; the top index
shares the last centre, as in OpenVLA) and un-normalises.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .stats import ActionStats, check_actions

Mode = Literal["openvla", "added"]


def action_token_names(n_bins: int = 256) -> list[str]:
    """The added-mode token strings, <|action_0|> ... <|action_{n_bins-1}|> (VST's names)."""
    return [f"<|action_{i}|>" for i in range(n_bins)]


class ActionTokenizer:
    """Encode continuous actions [..., D] to token ids [..., D] and back.

    mode="openvla": ids overwrite the last n_bins ids of a text vocabulary of size `vocab_size`
        (token = vocab_size - bin_index), exactly as OpenVLA does.
    mode="added":   ids are n_bins new tokens appended after a vocabulary of size `vocab_size`
        (`special_tokens` gives their strings; add them to the text tokenizer in that order).
    """

    def __init__(self, stats: ActionStats, n_bins: int = 256, mode: Mode = "openvla", vocab_size: int = 151643):
        if mode not in ("openvla", "added"):
            raise ValueError(f"unknown action token mode {mode!r}; expected 'openvla' or 'added'")
        if n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {n_bins}")
        if mode == "openvla" and vocab_size <= n_bins:
            raise ValueError(f"vocab_size {vocab_size} is too small to hold {n_bins} action tokens")
        self.stats, self.n_bins, self.mode, self.vocab_size = stats, int(n_bins), mode, int(vocab_size)
        self.edges = np.linspace(-1.0, 1.0, self.n_bins)
        self.centers = (self.edges[:-1] + self.edges[1:]) / 2.0
        # edges with +inf appended, and the same rounded up to float32 (for float32 x, x < e <=> x < that)
        self._edges_inf = np.append(self.edges, np.inf)
        e32 = self._edges_inf.astype(np.float32)
        self._edges_f32_up = np.where(e32 < self._edges_inf, np.nextafter(e32, np.float32(np.inf)), e32)
        # decoded value of every (dim, bin index 0..n-1) pair; the top bin repeats the last centre
        centers_n = np.append(self.centers, self.centers[-1])
        per_dim = stats.unnormalize(np.repeat(centers_n[:, None], stats.dim, axis=1))  # [n, D]
        self._decode_table = np.ascontiguousarray(per_dim.T).ravel()
        self._dim_offsets = np.arange(stats.dim) * self.n_bins

    @property
    def dim(self) -> int:
        return self.stats.dim

    @property
    def token_ids(self) -> np.ndarray:
        """The n_bins ids actions may use, ascending: the allowed set for constrained decoding."""
        if self.mode == "openvla":
            return np.arange(self.vocab_size - self.n_bins, self.vocab_size, dtype=np.int64)
        return np.arange(self.vocab_size, self.vocab_size + self.n_bins, dtype=np.int64)

    @property
    def special_tokens(self) -> list[str]:
        """Token strings to append to a text tokenizer in "added" mode (empty in "openvla" mode)."""
        return action_token_names(self.n_bins) if self.mode == "added" else []

    def _digitize(self, x: np.ndarray) -> np.ndarray:
        """np.digitize(x, edges) for x in [-1, 1] (1..n_bins), without its binary search.

        The edges are uniform, so arithmetic finds the bin; float rounding can leave it one off,
        which two comparisons against the real edges (the ones digitize uses) correct. For float32
        x, comparing with the edges rounded up to float32 gives the same answers as comparing with
        the float64 edges, at half the memory traffic.
        """
        edges = self._edges_f32_up if x.dtype == np.float32 else self._edges_inf
        one = x.dtype.type(1)
        k = np.floor((x + one) * x.dtype.type((self.n_bins - 1) / 2.0)).astype(np.int32)  # 0..n-1
        k -= x < edges[k]
        k += x >= edges[k + 1]  # edges[n] is +inf
        k += 1
        return k

    def encode_normalized(self, x) -> np.ndarray:
        """Token ids of already-normalised values in [-1, 1] (values outside are clipped)."""
        x = check_actions(x, self.dim, "normalized actions")
        return self._ids(np.clip(x if x.dtype == np.float32 else x.astype(np.float64), -1.0, 1.0))

    def _ids(self, x: np.ndarray) -> np.ndarray:
        idx = self._digitize(x)
        if self.mode == "openvla":
            return (self.vocab_size - idx).astype(np.int64)
        return (self.vocab_size + idx - 1).astype(np.int64)

    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"action token ids must be integers, got dtype {ids.dtype}")
        if ids.ndim == 0 or ids.shape[-1] != self.dim:
            raise ValueError(f"action token ids must have shape [..., {self.dim}], got {ids.shape}")
        lo, hi = self.token_ids[0], self.token_ids[-1]
        if ids.size and (ids.min() < lo or ids.max() > hi):
            first = ids[(ids < lo) | (ids > hi)].flat[0]
            raise ValueError(f"token id {int(first)} is not an action token (allowed range {lo}..{hi})")
        return ids

    def _bin_index(self, ids: np.ndarray) -> np.ndarray:
        """Bin index 0..n_bins-1 (= digitize - 1) of valid token ids."""
        return (self.vocab_size - 1 - ids) if self.mode == "openvla" else (ids - self.vocab_size)

    def decode_normalized(self, ids) -> np.ndarray:
        """Bin centres in [-1, 1] for token ids (the top bin shares the last centre, as in OpenVLA)."""
        return self.centers[np.minimum(self._bin_index(self._check_ids(ids)), self.n_bins - 2)]

    def encode(self, actions) -> np.ndarray:
        """Actions [..., D] -> int64 token ids [..., D]."""
        x = self.stats.normalize(actions)  # a fresh float32 array: clip it in place
        return self._ids(np.clip(x, -1.0, 1.0, out=x))

    def decode(self, ids) -> np.ndarray:
        """Token ids [..., D] -> float32 actions [..., D]: one lookup in a (dim, bin) table that
        holds unnormalize(centre) for every bin, the same values decoding elementwise gives."""
        return np.take(self._decode_table, self._bin_index(self._check_ids(ids)) + self._dim_offsets)

    def __repr__(self) -> str:
        return f"ActionTokenizer(dim={self.dim}, n_bins={self.n_bins}, mode={self.mode!r}, vocab_size={self.vocab_size})"
