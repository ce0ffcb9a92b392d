"""A small synchronous client for vla.serve, with reconnect.

    client = PolicyClient("ws://gpu-box:8000", api_key="...")
    client.metadata            # cameras, image size, chunk size, ...
    actions = client.act({"images": {...}, "state": state, "instruction": "pick up ..."})  # [H, 7]
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from .wire import pack, unpack


class ServerError(RuntimeError):
    """The server answered with an error frame (the connection stays usable)."""


class PolicyClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 5.0, connect_s: float = 5.0,
                 retry_wait_s: float = 0.5):
        """timeout_s: for each answer; connect_s: how long to keep trying to reach the server."""
        self.url, self.api_key, self.timeout_s = url, api_key, timeout_s
        self.connect_s, self.retry_wait_s = connect_s, retry_wait_s
        self._ws, self.metadata, self.last_timing = None, None, None
        self._ids = itertools.count()
        self._connect()

    def _connect(self) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        last, deadline = None, time.monotonic() + self.connect_s
        while True:
            try:
                self._ws = connect(self.url, additional_headers=headers, compression=None, max_size=None,
                                   open_timeout=self.timeout_s, proxy=None, legacy=True)
                meta = unpack(self._ws.recv(timeout=self.timeout_s))
                if meta.get("type") != "metadata":
                    raise ServerError(f"expected the server's metadata first, got {meta}")
                self.metadata = meta
                return
            except InvalidStatus as e:  # 401: retrying will not help
                raise ServerError(f"{self.url} refused the connection: HTTP {e.response.status_code} "
                                  f"{e.response.body.decode(errors='replace').strip()}") from None
            except (OSError, TimeoutError) as e:
                last = e
                if time.monotonic() + self.retry_wait_s > deadline:
                    break
                time.sleep(self.retry_wait_s)
        raise ConnectionError(f"cannot reach the policy server at {self.url}: {last}")

    def request(self, message: dict) -> dict:
        """Sends one frame and returns the server's reply; reconnects once if the link dropped."""
        from websockets.exceptions import ConnectionClosed

        message = dict(message, id=next(self._ids))
        for attempt in (0, 1):
            try:
                if self._ws is None:
                    self._connect()
                self._ws.send(pack(message))
                reply = unpack(self._ws.recv(timeout=self.timeout_s))
                break
            except TimeoutError:  # drop the link: its late answer must not be read as the next one's
                self.close()
                raise TimeoutError(f"no answer from {self.url} within {self.timeout_s} s") from None
            except (ConnectionClosed, OSError) as e:
                self.close()
                if attempt:
                    raise ConnectionError(f"lost the policy server at {self.url}: {e}") from None
        if reply.get("type") == "error":
            raise ServerError(reply["error"])
        if reply.get("id") != message["id"]:
            raise ServerError(f"reply {reply.get('id')} does not answer request {message['id']}")
        return reply

    def clone(self) -> "PolicyClient":
        """Another connection to the same server (one request at a time travels on each)."""
        return PolicyClient(self.url, self.api_key, self.timeout_s, self.connect_s, self.retry_wait_s)

    def act(self, observation: dict) -> np.ndarray:
        """One observation -> its action chunk float32 [H, 7]."""
        reply = self.request(observation)
        self.last_timing = reply["timing"]
        return np.asarray(reply["actions"], np.float32)

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
