"""moto's server on 127.0.0.1 as the AWS stand-in for tests, with the fake credentials it accepts."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

REGION = "eu-west-1"
# moto accepts any credentials until IAM enforcement is switched on; these are the documented fakes.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MotoServer:
    """A moto_server child process; `env()` gives what a process needs to use it through boto3."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        moto = pathlib.Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.process.stderr.read().decode(errors='replace')}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1).close()  # noqa: S310
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start within 30 s")

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_REGION": REGION, **FAKE_CREDENTIALS}

    def client(self, service: str, **credentials: str):
        import boto3

        keys = {
            "aws_access_key_id": credentials.get("access_key", FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
            "aws_secret_access_key": credentials.get("secret_key", FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
        }
        return boto3.client(service, region_name=REGION, endpoint_url=self.url, **keys)

    def post(self, path: str, body: bytes = b"") -> None:
        # A form content type would make moto's Flask app read the body as a form and see no data.
        request = urllib.request.Request(  # noqa: S310
            f"{self.url}{path}", method="POST", data=body, headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310

    def reset(self) -> None:
        """Forget every resource and switch IAM enforcement off."""
        self.post("/moto-api/reset")
        self.relax_iam()

    def enforce_iam(self) -> None:
        """From the next request on, moto checks every request's credentials against its IAM policies."""
        self.post("/moto-api/reset-auth", b"0")

    def relax_iam(self) -> None:
        self.post("/moto-api/reset-auth", b"inf")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
