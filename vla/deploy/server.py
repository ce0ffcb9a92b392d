"""Serve a policy over websockets: `python -m vla.serve checkpoint=PATH port=8000`.

Protocol (binary msgpack frames, numpy arrays as typed byte buffers, never pickle; see vla.deploy.wire):
- on connect the server sends {"type": "metadata", cameras, image_size, state_dim, action_dim,
  chunk_size, ...};
- the client sends one observation {"images": {camera: uint8[H, W, 3]}, "state": float32[8],
  "instruction": str, optional "id"}; the server answers {"type": "actions", "actions":
  float32[H, 7], "timing": {queue_ms, infer_ms, total_ms, batch_size}, "id"};
- a bad frame gets {"type": "error", "error": "..."} and the connection stays open.
openpi clients (openpi-client's WebsocketClientPolicy) are served too: their array encoding is read
(vla.deploy.wire) and each answer goes back in the encoding the connection spoke, {"actions": ...}
as they read it, errors as text frames as openpi's server sends them; with `obs_map` (policies.processor.KEY_MAPS) an
openpi observation's flat keys become ours.
Requests from concurrent clients that arrive within `batch_wait_ms` share one policy call.
HTTP GET /healthz answers 200 without a key; with `api_key` set (or $VLA_API_KEY) the websocket
handshake needs `Authorization: Bearer <key>` and is refused with 401 otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from http import HTTPStatus

import numpy as np
from omegaconf import DictConfig

from policies.processor import KEY_MAPS, map_keys
from policies.transforms import camera_images, stack_observations

from .wire import WireError, pack, unpack_with_encoding

log = logging.getLogger("vla.serve")
STATE_DIM, ACTION_DIM = 8, 7


class RequestError(ValueError):
    """An observation the server cannot use; its message goes back to the client."""


class PolicyServer:
    def __init__(self, policy, cameras: list[str], resolution: int, chunk_size: int, *, name: str = "policy",
                 api_key: str | None = None, max_batch: int = 8, batch_wait_ms: float = 2.0,
                 max_message_bytes: int = 16 << 20, obs_map: str | None = None):
        self.policy, self.cameras, self.resolution = policy, list(cameras), int(resolution)
        self.api_key, self.max_batch, self.batch_wait = api_key or None, int(max_batch), batch_wait_ms / 1000
        self.max_message_bytes = int(max_message_bytes)
        if obs_map is not None and obs_map not in KEY_MAPS:
            raise ValueError(f"obs_map must be one of {sorted(KEY_MAPS)} or null, not {obs_map!r}")
        self.obs_map = KEY_MAPS.get(obs_map)
        self.metadata = {"type": "metadata", "policy": name, "cameras": self.cameras,
                         "image_size": [self.resolution, self.resolution], "image_dtype": "uint8 [H, W, 3], upright",
                         "state_dim": STATE_DIM, "state_layout": "eef position (3), eef axis-angle (3), gripper qpos (2)",
                         "action_dim": ACTION_DIM, "chunk_size": int(chunk_size),
                         "action_space": "OSC_POSE delta in [-1, 1] (x, y, z, roll, pitch, yaw), gripper -1 open / +1 close",
                         "max_batch": self.max_batch, "max_message_bytes": self.max_message_bytes}
        self.policy_calls, self.clients = 0, 0
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port: int | None = None

    # -- requests ---------------------------------------------------------------------------
    def _mapped(self, msg: dict) -> dict:
        """An openpi client's flat observation as ours, through the server's obs_map."""
        try:
            return map_keys(msg, self.obs_map)
        except ValueError as e:
            raise RequestError(str(e)) from None

    def _observation(self, msg) -> dict:
        """Checks one observation and brings its images to the policy's resolution."""
        if not isinstance(msg, dict):
            raise RequestError("a request must be a map with images, state and instruction")
        if self.obs_map is not None and "images" not in msg:
            msg = self._mapped(msg)
        missing = [k for k in ("images", "state", "instruction") if k not in msg]
        if missing:
            hint = " (an openpi client? serve with obs_map=openpi_libero)" if "prompt" in msg or any(
                "/" in str(k) for k in msg) else ""
            raise RequestError(f"observation lacks {missing}{hint}")
        if not isinstance(msg["instruction"], str) or not msg["instruction"].strip():
            raise RequestError("instruction must be a non-empty string")
        if not isinstance(msg["images"], dict):
            raise RequestError(f"images must map camera name to uint8 [H, W, 3], the cameras are {self.cameras}")
        try:
            images = dict(zip(self.cameras, camera_images(msg["images"], self.cameras, self.resolution)))
        except (KeyError, ValueError) as e:
            raise RequestError(str(e).strip('"')) from None
        state = np.asarray(msg["state"])
        if state.dtype.kind not in "if" or state.shape != (STATE_DIM,):
            raise RequestError(f"state must be {STATE_DIM} numbers, got {state.dtype} {state.shape}")
        obs = {"images": images, "state": state.astype(np.float32), "instruction": msg["instruction"]}
        if "grasps" in msg:  # completed grasp-release cycles, for a policy trained with train.grasp_count
            grasps = np.asarray(msg["grasps"])
            if grasps.shape != () or grasps.dtype.kind not in "iu" or grasps < 0:
                raise RequestError(f"grasps must be a count (an integer >= 0), got {msg['grasps']!r}")
            obs["grasps"] = int(grasps)
        if "expert_action" in msg:  # the simulator's scripted-expert hint, for policy=scripted
            obs["expert_action"] = np.asarray(msg["expert_action"], np.float32).reshape(ACTION_DIM)
        return obs

    def _act(self, batch: list[dict]) -> np.ndarray:
        obs = stack_observations(batch, self.cameras)
        actions = np.asarray(self.policy.act(obs), np.float32)
        if actions.ndim != 3 or actions.shape[0] != len(batch) or actions.shape[2] != ACTION_DIM:
            raise RuntimeError(f"the policy returned actions of shape {actions.shape}")
        return actions

    async def _batcher(self) -> None:
        """Takes the first waiting request, then any that arrive within batch_wait from the other
        connected clients, and runs one policy call for all of them in a worker thread (the event loop keeps serving)."""
        while True:
            items = [await self._queue.get()]
            deadline = time.perf_counter() + self.batch_wait
            while len(items) < min(self.max_batch, self.clients):  # a lone client never waits
                left = deadline - time.perf_counter()
                try:
                    items.append(self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            t0 = time.perf_counter()
            try:
                actions = await asyncio.to_thread(self._act, [obs for obs, _, _ in items])
                self.policy_calls += 1
            except Exception as e:  # one bad call fails its requests, not the server
                log.exception("policy call failed")
                for _, fut, _ in items:
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"policy failed: {e}"))
                continue
            infer_ms = (time.perf_counter() - t0) * 1000
            for k, (_, fut, t_in) in enumerate(items):
                if not fut.done():
                    fut.set_result((actions[k], {"queue_ms": round((t0 - t_in) * 1000, 3),
                                                 "infer_ms": round(infer_ms, 3), "batch_size": len(items)}))

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        self.clients += 1
        try:
            await self._session(ws)
        except ConnectionClosed:  # the client left (or gave up waiting) before its answer
            pass
        finally:
            self.clients -= 1

    async def _session(self, ws) -> None:
        await ws.send(pack(self.metadata))
        encoding = "vla"  # the connection's: openpi once its client has sent openpi's arrays
        async for frame in ws:
            t_in = time.perf_counter()
            req_id = None
            try:
                if len(frame) > self.max_message_bytes:
                    raise RequestError(f"message of {len(frame)} bytes exceeds the server's limit of "
                                       f"{self.max_message_bytes} bytes")
                msg, spoken = unpack_with_encoding(frame)
                encoding = "openpi" if spoken == "openpi" else encoding
                req_id = msg.get("id") if isinstance(msg, dict) else None
                fut = asyncio.get_running_loop().create_future()
                await self._queue.put((self._observation(msg), fut, t_in))
                actions, timing = await fut
                timing["total_ms"] = round((time.perf_counter() - t_in) * 1000, 3)
                reply = {"type": "actions", "actions": actions, "timing": timing}
            except (WireError, RequestError, RuntimeError) as e:
                log.warning("rejected a request from %s: %s", ws.remote_address, e)
                if encoding == "openpi":  # openpi's client raises on a text frame with the message
                    await ws.send(str(e))
                    continue
                reply = {"type": "error", "error": str(e)}
            if req_id is not None:
                reply["id"] = req_id
            await ws.send(pack(reply, encoding))

    def _http(self, connection, request):
        """/healthz without a key; the websocket handshake needs the key when one is set."""
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if self.api_key:
            given = request.headers.get("Authorization", "").encode()
            # ours send "Bearer <key>", openpi's client "Api-Key <key>"
            if not any(hmac.compare_digest(given, f"{kind} {self.api_key}".encode()) for kind in ("Bearer", "Api-Key")):
                log.warning("refused a connection without the right API key from %s", connection.remote_address)
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        return None

    # -- running ----------------------------------------------------------------------------
    async def serve(self, host: str = "127.0.0.1", port: int = 8000, ready: threading.Event | None = None) -> None:
        from websockets.asyncio.server import serve

        self._loop, self._queue, self._stop = asyncio.get_running_loop(), asyncio.Queue(), asyncio.Event()
        batcher = asyncio.create_task(self._batcher())
        # frames up to 4x the limit are read and answered with an error frame; beyond that the
        # websocket layer closes the connection (1009) rather than buffer unbounded input
        async with serve(self._handle, host, port, process_request=self._http, compression=None,
                         max_size=4 * self.max_message_bytes) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving %s on ws://%s:%d", self.metadata["policy"], host, self.port)
            if ready is not None:
                ready.set()
            await self._stop.wait()
        batcher.cancel()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> "PolicyServer":
        """Runs the server on a background thread (tests, benchmarks); port 0 picks a free one."""
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(host, port, ready)), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the policy server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if getattr(self, "_thread", None) is not None:
            self._thread.join(10)


def build_server(cfg: DictConfig) -> PolicyServer:
    from ..eval import load_policy

    policy, cameras, resolution, chunk = load_policy(cfg.policy, cfg.checkpoint, cfg.suite, int(cfg.random_chunk), cfg.seed)
    name = f"checkpoint {cfg.checkpoint}" if cfg.policy == "checkpoint" else cfg.policy
    return PolicyServer(policy, cameras, resolution, chunk, name=name, api_key=cfg.api_key, max_batch=cfg.max_batch,
                        batch_wait_ms=cfg.batch_wait_ms, max_message_bytes=int(cfg.max_message_mb * (1 << 20)),
                        obs_map=cfg.get("obs_map"))
