"""A throwaway Chroma server (``chroma run``, from the chromadb package on PyPI) on a free
loopback port, with its data in a temporary folder: a real vector database server for tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["ChromaServer"]


class ChromaServer:
    """``chroma run`` on 127.0.0.1; ``host``/``port`` for ``chromadb.HttpClient``."""

    def __init__(self) -> None:
        binary = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        if not Path(binary).exists():
            raise RuntimeError("chroma is not installed (`make test` installs chromadb)")
        self.binary = binary
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.host = "127.0.0.1"
        self._data = tempfile.mkdtemp(prefix="rat-chroma-")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self.binary,
                "run",
                "--path",
                self._data,
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://{self.host}:{self.port}/api/v2/heartbeat"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until it answers its heartbeat
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url, timeout=0.5) as answer,
            ):
                if answer.status == 200:
                    return
            if self._proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self._proc.returncode}")
            time.sleep(0.05)  # polling a child process's port until it listens
        self.stop()
        raise RuntimeError("chroma run did not answer within 30 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        shutil.rmtree(self._data, ignore_errors=True)

    def __enter__(self) -> ChromaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
