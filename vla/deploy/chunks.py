"""Action chunks on the robot side: the queue of actions still to execute and how the next chunk
joins it, while the arm keeps moving.

sync   ask for a chunk when the queue is empty and hold still until it arrives (the arm waits for
       every answer: episodes lengthen by the delay at each chunk)
async  ask from the newest observation as soon as `threshold` actions remain, keep executing the
       queue while the request is in flight; the answer is aligned to the actions executed since
       its observation (those are in the past: dropped), and the rest joins the queue blended with
       the actions still there (cross-fade over `blend_steps`, ACT's temporal ensemble, or
       replace), so the command does not jump where the chunks meet

If the queue runs out before an answer arrives (the answer is late) the arm holds still, logged.
Requests go through a requester: `ThreadedRequests` (real time, one request in flight on a worker
thread) or `SimulatedLatency` (simulation: the answer is computed at once and released a given
number of control steps later, so the same episode gives the same numbers every run).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("vla.ros_bridge")
MODES = ("sync", "async")
BLENDS = ("crossfade", "ensemble", "replace")


@dataclass
class ChunkSettings:
    mode: str = "sync"
    threshold: int = 4             # async: ask when this many actions remain (LeRobot's chunk_size_threshold, as a count)
    blend: str = "crossfade"
    blend_steps: int = 3           # crossfade: the old actions hand over to the new ones over this many steps
    ensemble_decay: float = 0.5    # ensemble: the newer chunk's weight is exp(-decay) of the older's (ACT's m)
    execute_steps: int | None = None  # actions of each chunk used (null: all)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"chunks.mode must be one of {MODES}, not {self.mode!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"chunks.blend must be one of {BLENDS}, not {self.blend!r}")
        if self.threshold < 0 or self.blend_steps < 0:
            raise ValueError("chunks.threshold and chunks.blend_steps must be >= 0")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError(f"chunks.execute_steps must be >= 1 or null, not {self.execute_steps}")


class ChunkQueue:
    """The actions still to execute, the first one for the next control step."""

    def __init__(self, settings: ChunkSettings):
        self.settings = settings
        self.queue: list[np.ndarray] = []
        self.executed = 0  # actions executed so far: a request remembers this count to align its answer

    def wants(self, in_flight: bool, queued: int | None = None) -> bool:
        """Whether to ask for the next chunk now (with `queued` actions in the queue instead of
        its length: a prediction)."""
        if in_flight:
            return False
        queued = len(self.queue) if queued is None else queued
        return queued <= (self.settings.threshold if self.settings.mode == "async" else 0)

    def _usable(self, chunk, asked_at: int) -> tuple[list, int]:
        """The chunk's actions that are still ahead of the arm, and how many are past."""
        s = self.settings
        chunk = [np.asarray(a, np.float64) for a in np.asarray(chunk)[: s.execute_steps or len(chunk)]]
        past = min(self.executed - asked_at, len(chunk)) if s.mode == "async" else 0  # sync: the arm held still
        return chunk[past:], past

    def length_after(self, chunk, asked_at: int) -> int:
        """The queue's length once this answer has arrived (arrive() keeps the new actions)."""
        return len(self._usable(chunk, asked_at)[0]) or len(self.queue)

    def arrive(self, chunk, asked_at: int) -> int:
        """A chunk answering the observation taken when `asked_at` actions had been executed joins
        the queue. Returns how many of its actions were dropped as past."""
        s = self.settings
        new, past = self._usable(chunk, asked_at)
        if not new:  # the whole answer is in the past: the queue goes on as it was
            return past
        overlap = min(len(self.queue), len(new))
        if s.mode == "async" and s.blend != "replace":
            new[:overlap] = [self._blend(self.queue[i], new[i], i) for i in range(overlap)]
        self.queue = new
        return past

    def _blend(self, old: np.ndarray, new: np.ndarray, i: int) -> np.ndarray:
        s = self.settings
        if s.blend == "crossfade":
            w = min(1.0, (i + 1) / (s.blend_steps + 1))
        else:  # ensemble: ACT's exponential weights, the older prediction first
            w = np.exp(-s.ensemble_decay) / (1 + np.exp(-s.ensemble_decay))
        out = (1 - w) * old + w * new
        out[6] = new[6] if w >= 0.5 else old[6]  # the gripper opens or closes, never half-way
        return out

    def next(self) -> np.ndarray | None:
        """The action for this control step, or None: nothing queued (hold still)."""
        if not self.queue:
            return None
        self.executed += 1
        return self.queue.pop(0)

    def clear(self) -> None:
        self.queue = []


class ThreadedRequests:
    """Real time: the request runs on a worker thread while the control loop goes on."""

    def __init__(self, client):
        self.client, self.pool, self.future, self.asked_at = client, ThreadPoolExecutor(1), None, 0

    @property
    def in_flight(self) -> bool:
        return self.future is not None

    def submit(self, obs: dict, asked_at: int, step: int) -> None:
        self.future, self.asked_at = self.pool.submit(self.client.act, obs), asked_at

    def poll(self, step: int):
        """(chunk, asked_at) once the answer is in, else None; the request's error if it failed."""
        if self.future is None or not self.future.done():
            return None
        future, self.future = self.future, None
        return future.result(), self.asked_at

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class SimulatedLatency:
    """Simulation: the answer is computed at once from the observation and released `delay`
    control steps after the request; delay is a number of steps or a function of the request's
    index (jitter drawn from a seeded generator)."""

    def __init__(self, client, delay):
        self.client, self.delay, self.pending, self.requests = client, delay, None, 0

    @property
    def in_flight(self) -> bool:
        return self.pending is not None

    def submit(self, obs: dict, asked_at: int, step: int) -> None:
        d = self.delay(self.requests) if callable(self.delay) else self.delay
        self.requests += 1
        self.pending = (self.client.act(obs), asked_at, step + int(d))

    def peek(self, step: int):
        """What poll(step) would return, leaving it pending."""
        if self.pending is None or step < self.pending[2]:
            return None
        return self.pending[:2]

    def poll(self, step: int):
        got = self.peek(step)
        if got is not None:
            self.pending = None
        return got

    def close(self) -> None:
        pass


def delay_steps(delay_ms: float, jitter_ms: float, control_hz: float, seed: int):
    """The delay of request i in control steps: delay_ms, plus a uniform jitter of +-jitter_ms
    drawn per request from a seeded generator, rounded up to whole steps (an answer can only be
    used at a tick)."""
    rng = np.random.default_rng(seed)
    period_ms = 1000.0 / control_hz

    def delay(i: int) -> int:
        ms = delay_ms + (rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0)
        return int(np.ceil(max(0.0, ms) / period_ms - 1e-9))

    return delay
