"""The robot-side runtime, independent of the ROS flavour: safety limits on every command and the
`Bridge`, which keeps the newest observation parts with their stamps and on each tick decides the
command (the next queued action of vla.deploy.chunks, or a stop).

Safety, on the robot side, whatever the server sends:
- every command is clipped to `max_translation_m` / `max_rotation_rad` per step and its target
  to the workspace box (base frame); non-finite actions become a stop;
- a watchdog publishes a stop (zero delta, gripper held) when the newest observation is older
  than `max_obs_age_s` (default 200 ms) or the server does not answer within `server_timeout_s`;
- commanding can be turned off and on (`set_enabled`); every clipped or stopped command is logged.

ROS transports and the entry point: vla.deploy.ros_io.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from envs.robot_state import ROTATION_RAD_PER_UNIT, TRANSLATION_M_PER_UNIT, GraspCounter, robot_state

from .chunks import ChunkQueue, ChunkSettings, ThreadedRequests

log = logging.getLogger("vla.ros_bridge")


# -- safety ---------------------------------------------------------------------------------
@dataclass
class Command:
    translation: np.ndarray  # metres this step, base frame
    rotation: np.ndarray     # radians this step (axis-angle), base frame
    gripper: float           # -1 open, +1 close
    notes: list[str] = field(default_factory=list)  # why it was clipped or stopped

    @property
    def is_stop(self) -> bool:
        return not self.translation.any() and not self.rotation.any()


@dataclass
class SafetyLimits:
    workspace_min: tuple = (-0.6, -0.6, 0.0)
    workspace_max: tuple = (0.6, 0.6, 0.8)
    max_translation_m: float = 0.01   # per control step (0.2 m/s at 20 Hz)
    max_rotation_rad: float = 0.1
    translation_m_per_unit: float = TRANSLATION_M_PER_UNIT
    rotation_rad_per_unit: float = ROTATION_RAD_PER_UNIT

    def __post_init__(self):
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (lo < hi).all():
            raise ValueError(f"workspace_min {list(lo)} must be below workspace_max {list(hi)} in x, y and z")
        if self.max_translation_m <= 0 or self.max_rotation_rad <= 0:
            raise ValueError("max_translation_m and max_rotation_rad must be positive")
        self.lo, self.hi = lo, hi

    def command(self, action, eef_pos) -> Command:
        """A policy action (OSC_POSE delta in [-1, 1] units) at end-effector position eef_pos ->
        the command to publish, within every limit."""
        a = np.asarray(action, np.float64).reshape(-1)
        if a.shape != (7,) or not np.isfinite(a).all():
            return Command(np.zeros(3), np.zeros(3), 0.0, [f"invalid action {a.round(3).tolist()}: stop"])
        notes = []
        gripper = 1.0 if a[6] > 0 else -1.0
        rot = a[3:6] * self.rotation_rad_per_unit
        if np.linalg.norm(rot) > self.max_rotation_rad:
            notes.append(f"rotation {np.linalg.norm(rot):.3f} rad clipped to {self.max_rotation_rad}")
            rot *= self.max_rotation_rad / np.linalg.norm(rot)
        pos = np.asarray(eef_pos, np.float64)
        delta = a[:3] * self.translation_m_per_unit
        target = np.clip(pos + delta, self.lo, self.hi)
        if not np.allclose(target, pos + delta):
            notes.append(f"target {np.round(pos + delta, 3).tolist()} clipped to the workspace box")
            delta = target - pos
        if np.linalg.norm(delta) > self.max_translation_m:
            notes.append(f"translation {np.linalg.norm(delta):.4f} m clipped to {self.max_translation_m}")
            delta *= self.max_translation_m / np.linalg.norm(delta)
        return Command(delta, rot, gripper, notes)


# -- the bridge, independent of the ROS flavour ----------------------------------------------
class Bridge:
    """Keeps the newest observation parts with their times, and on each tick decides the command:
    the next queued action (vla.deploy.chunks: sync or asynchronous refills), or a stop."""

    def __init__(self, client, limits: SafetyLimits, cameras: list[str], instruction: str, publish,
                 max_obs_age_s: float = 0.2, execute_steps: int | None = None, enabled: bool = False,
                 extras: list[str] = (), clock=time.time, chunks: ChunkSettings | None = None, requests=None):
        self.client, self.limits, self.cameras, self.instruction = client, limits, list(cameras), instruction
        self.publish, self.max_obs_age_s = publish, max_obs_age_s
        self.extras, self.clock = list(extras), clock
        settings = chunks or ChunkSettings()
        if execute_steps is not None:  # the caller's settings stay as they were
            settings = dataclasses.replace(settings, execute_steps=execute_steps)
        self.chunks = ChunkQueue(settings)
        self.requests = requests or ThreadedRequests(client, settings.max_in_flight)
        self.enabled, self.gripper, self.step = enabled, -1.0, 0
        self.grasps = GraspCounter()  # from the gripper commands this bridge published (the task's progress)
        self.parts: dict[str, tuple[object, float]] = {}  # name -> (value, stamp in seconds)
        self.stats = {"commands": 0, "clipped": 0, "stops": 0, "queries": 0, "server_errors": 0, "answers": 0, "late": 0,
                      "past_dropped": 0}
        self.lock = threading.Lock()
        self.fresh = threading.Event()  # set by every update: the lockstep loop waits on it
        self._stopped_for = None

    def update(self, name: str, value, stamp: float | None = None) -> None:
        """A new camera image / 'pose' (pos, quat xyzw) / 'gripper' qpos / extra; stamp = its
        capture time (header stamp), or now when the publisher left it empty."""
        with self.lock:
            self.parts[name] = (value, stamp if stamp else self.clock())
        self.fresh.set()

    def complete_stamp(self) -> float | None:
        """The stamp shared by the cameras, the pose and the gripper (extras carry no header), or
        None while they differ or a part is missing: one complete observation of the simulated arm."""
        with self.lock:
            if any(n not in self.parts for n in self.extras):
                return None
            stamps = [self.parts[n][1] if n in self.parts else None for n in self.cameras + ["pose", "gripper"]]
        return stamps[0] if None not in stamps and len(set(stamps)) == 1 else None

    def run_lockstep(self, running) -> None:
        """Simulated time (`clock: sim`): tick once per complete new observation, the clock
        reading its stamp, instead of at a wall-clock rate. The simulated arm steps once per
        command, so arm and bridge advance together however slowly the simulator renders: the
        same episode as the direct runner (vla.deploy.latency), through ROS."""
        last = None
        self.clock = lambda: last
        while running():
            self.fresh.wait(0.1)
            self.fresh.clear()
            stamp = self.complete_stamp()
            if stamp is not None and (last is None or stamp > last):
                last = stamp
                self.tick()

    def set_enabled(self, on: bool) -> str:
        self.enabled = bool(on)
        self.chunks.clear()
        if not on:
            self._stop("disabled")
        log.info("commanding %s", "enabled" if on else "disabled")
        return "enabled" if on else "disabled"

    def observation(self):
        """(observation for the server, its age in seconds, eef position) or (None, reason, None)."""
        with self.lock:
            need = self.cameras + ["pose", "gripper"] + self.extras
            missing = [n for n in need if n not in self.parts]
            if missing:
                return None, f"no message yet from {missing}", None
            age = self.clock() - min(self.parts[n][1] for n in need)
            (pos, quat), _ = self.parts["pose"]
            obs = {"images": {c: self.parts[c][0] for c in self.cameras},
                   "state": robot_state(pos, quat, self.parts["gripper"][0]), "instruction": self.instruction,
                   "grasps": self.grasps.count}
            for n in self.extras:
                obs[n] = self.parts[n][0]
        return obs, age, np.asarray(pos, np.float64)  # float64: the box check must not see float32 rounding

    def _stop(self, reason: str, kind: str | None = None) -> None:
        cmd = Command(np.zeros(3), np.zeros(3), self.gripper, [reason])
        if self._stopped_for != (kind or reason):  # log when a stop begins; publish one every tick
            log.warning("stop: %s", reason)
        self._stopped_for = kind or reason
        self.stats["stops"] += 1
        self._publish(cmd)

    def _publish(self, cmd: Command) -> None:
        self.grasps.update(cmd.gripper)  # every published command, stops included, is a step of the count
        self.publish(cmd)

    def _receive(self) -> None:
        """Take in the answers that have arrived (a failed request's error propagates)."""
        for got in self.requests.poll(self.step):
            self.stats["answers"] += 1
            self.stats["past_dropped"] += self.chunks.arrive(*got)

    def asks_next_tick(self) -> bool:
        """Whether the next tick will send a request, so read the cameras: what tick() will decide,
        for a requester that can peek at its answers (SimulatedLatency). A simulation renders the
        cameras only for those ticks (vla.deploy.latency)."""
        due = self.requests.peek(self.step)
        if not due:
            return self.chunks.wants(self.requests.in_flight)
        after = copy.deepcopy(self.chunks)
        for got in due:
            after.arrive(*got)
        return after.wants(self.requests.in_flight - len(due))

    def tick(self) -> None:
        if not self.enabled:
            return
        obs, age, eef_pos = self.observation()
        if obs is None:
            return self._stop(age)
        if age > self.max_obs_age_s:
            self.chunks.clear()  # the world moved on: a stale chunk is not resumed
            return self._stop(f"observation is {age * 1000:.0f} ms old (limit {self.max_obs_age_s * 1000:.0f} ms)", "stale")
        try:
            self._receive()
            if self.chunks.wants(self.requests.in_flight):
                self.requests.submit(obs, self.chunks.executed, self.step)
                self.stats["queries"] += 1
                self._receive()  # an answer with no delay joins at once
        except Exception as e:  # timeout, lost link, error frame: stop now, queue dropped, ask again next tick
            self.stats["server_errors"] += 1
            self.chunks.clear()
            self.step += 1
            return self._stop(f"policy server: {e}", "server")
        action = self.chunks.next()
        self.step += 1
        if action is None:
            if self.chunks.settings.mode == "async" and self.chunks.executed:
                if self._stopped_for != "late":
                    self.stats["late"] += 1
                return self._stop("the next chunk is late: the queue ran out, holding still", "late")
            return self._stop("waiting for the policy server", "waiting")
        cmd = self.limits.command(action, eef_pos)
        self._stopped_for = None
        if cmd.notes:
            self.stats["clipped"] += 1
            log.warning("clipped: %s", "; ".join(cmd.notes))
        self.gripper = cmd.gripper
        self.stats["commands"] += 1
        self._publish(cmd)
