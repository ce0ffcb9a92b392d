"""Action chunks on the robot side: the queue of actions still to execute and how the next chunk
joins it, while the arm keeps moving.

sync   ask for a chunk when the queue is empty and hold still until it arrives (the arm waits for
       every answer: episodes lengthen by the delay at each chunk)
async  ask from the newest observation as soon as `threshold` actions remain, keep executing the
       queue while the request is in flight; the answer is aligned to the actions executed since
       its observation (those are in the past: dropped), and the rest joins the queue blended with
       the actions still there (cross-fade over `blend_steps`, ACT's temporal ensemble, or
       replace), so the command does not jump where the chunks meet; with `max_in_flight` > 1 it
       asks again before the last answer is in (at most once a tick), so each answer is planned
       from a fresher observation: at a delay of d steps every executed action is the d-th of a
       chunk planned d steps ago, instead of the d-th to the last of one planned up to H-1 ago

If the queue runs out before an answer arrives (the answer is late) the arm holds still, logged.
An answer older than one already taken in (jitter can reorder them) is dropped whole.
Requests go through a requester: `ThreadedRequests` (real time, each request in flight on a worker
thread with its own connection) or `SimulatedLatency` (simulation: the answer is computed at once and released a given
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
    max_in_flight: int = 1         # async: requests in flight at once (> 1: a fresher plan, up to one a tick)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"chunks.mode must be one of {MODES}, not {self.mode!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"chunks.blend must be one of {BLENDS}, not {self.blend!r}")
        if self.max_in_flight < 1:
            raise ValueError(f"chunks.max_in_flight must be >= 1, not {self.max_in_flight}")
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
        self.newest = -1   # the asked_at of the newest answer taken in

    def wants(self, in_flight: int) -> bool:
        """Whether to ask for the next chunk now, with `in_flight` requests unanswered (the bridge
        asks at most once a tick)."""
        s = self.settings
        if s.mode == "sync":
            return not in_flight and not self.queue
        return in_flight < s.max_in_flight and len(self.queue) <= s.threshold

    def _usable(self, chunk, asked_at: int) -> tuple[list, int]:
        """The chunk's actions that are still ahead of the arm, and how many are past."""
        s = self.settings
        chunk = [np.asarray(a, np.float64) for a in np.asarray(chunk)[: s.execute_steps or len(chunk)]]
        past = min(self.executed - asked_at, len(chunk)) if s.mode == "async" else 0  # sync: the arm held still
        return chunk[past:], past

    def arrive(self, chunk, asked_at: int) -> int:
        """A chunk answering the observation taken when `asked_at` actions had been executed joins
        the queue. Returns how many of its actions were dropped as past (all of them when a newer
        answer is already in)."""
        s = self.settings
        if asked_at < self.newest:
            return len(chunk)
        self.newest = asked_at
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
    """Real time: each request runs on a worker thread, with its own connection (a websocket
    carries one request at a time), while the control loop goes on."""

    def __init__(self, client, max_in_flight: int = 1):
        self.clients = [client] + [client.clone() for _ in range(max_in_flight - 1)]
        self.pool, self.pending = ThreadPoolExecutor(max_in_flight), []  # (future, client, asked_at)

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def submit(self, obs: dict, asked_at: int, step: int) -> None:
        busy = [c for _, c, _ in self.pending]
        client = next(c for c in self.clients if all(c is not b for b in busy))
        self.pending.append((self.pool.submit(client.act, obs), client, asked_at))

    def poll(self, step: int) -> list:
        """[(chunk, asked_at)] of the answers that are in, oldest request first; a failed request's
        error propagates."""
        done, waiting = [], []
        for p in self.pending:  # one done() per request: one finishing meanwhile waits for the next poll
            (done if p[0].done() else waiting).append(p)
        self.pending = waiting
        return [(future.result(), asked_at) for future, _, asked_at in done]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for c in self.clients[1:]:
            c.close()


class SimulatedLatency:
    """Simulation: the answer is computed at once from the observation and released `delay`
    control steps after the request; delay is a number of steps or a function of the request's
    index (jitter drawn from a seeded generator)."""

    def __init__(self, client, delay):
        self.client, self.delay, self.pending, self.requests = client, delay, [], 0  # (due step, chunk, asked_at)

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def submit(self, obs: dict, asked_at: int, step: int) -> None:
        d = self.delay(self.requests) if callable(self.delay) else self.delay
        self.requests += 1
        self.pending.append((step + int(d), self.client.act(obs), asked_at))

    def peek(self, step: int) -> list:
        """What poll(step) would return, leaving it pending."""
        return [(chunk, asked_at) for due, chunk, asked_at in self.pending if due <= step]

    def poll(self, step: int) -> list:
        got = self.peek(step)
        self.pending = [p for p in self.pending if p[0] > step]
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
