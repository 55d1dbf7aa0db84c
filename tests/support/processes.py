"""Real processes the tests talk to: stub upstreams, llama.cpp's server, ``lockgate serve``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class StubUpstream:
    """An OpenAI-compatible stub server in its own process; can be killed and restarted on its port."""

    def __init__(self, name: str = "stub", latency_ms: float = 0.0, port: int | None = None) -> None:
        self.name = name
        self.latency_ms = latency_ms
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StubUpstream:
        command = [
            sys.executable,
            "-m",
            "lockgate.testing.stub",
            "--port",
            str(self.port),
            "--name",
            self.name,
        ]
        command += ["--latency-ms", str(self.latency_ms)]
        self.proc = subprocess.Popen(command)
        wait_for_http(f"http://127.0.0.1:{self.port}/v1/models", 15, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def script(self, **plan: Any) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_stub/script", json=plan).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_stub/reset").raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/_stub/requests").json()
        requests: list[dict[str, Any]] = answer["requests"]
        return requests


class LockgateServer:
    """``lockgate serve`` as a user runs it, in its own process."""

    def __init__(self, workdir: Path, config: Path | None, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = config
        self.env = {**os.environ, **env}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> LockgateServer:
        """`lockgate migrate`, then `lockgate serve`, as an operator starts a server."""
        with self.log.open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "lockgate", "migrate"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=log,
                check=True,
                timeout=120,
            )
        command = [sys.executable, "-m", "lockgate", "serve", "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.workdir, env=self.env, stdout=log, stderr=log)
        wait_for_http(f"{self.url}/healthz", timeout, self.proc)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> bool:
        """Signal the server and wait; True when it shut down gracefully.

        uvicorn re-raises the signal it caught once shutdown is complete, so a graceful stop on SIGTERM
        exits with -SIGTERM rather than 0.
        """
        if self.proc is None:
            return True
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code in (0, -sig) and "Application shutdown complete." in self.output()


class LlamaServer:
    """llama-cpp-python's own OpenAI-compatible server on the packaged Gemma file: a real upstream."""

    def __init__(self, model_file: Path) -> None:
        self.model_file = model_file
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        # Gemma 3 270M is a base model: its own chat template yields empty answers, alpaca's works.
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_file)]
        command += [
            "--port",
            str(self.port),
            "--chat_format",
            "alpaca",
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
        ]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_http(f"{self.base_url}/models", 120, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def stub_config_file(directory: Path, stub: StubUpstream) -> Path:
    """A lockgate.yaml serving model ``m`` from ``stub``, for tests that run ``lockgate serve``."""
    import yaml

    path = directory / "lockgate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": {"stub": {"kind": "openai", "base_url": stub.base_url}},
                "models": [{"name": "m", "deployments": [{"provider": "stub", "model": "s"}]}],
            }
        )
    )
    return path
