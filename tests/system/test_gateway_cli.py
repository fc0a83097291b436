"""``stratus up --http``, ``stratus token`` and ``stratus gateway`` with real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import stratus
from helpers import free_port, wait_until

pytestmark = pytest.mark.system

STRATUS = [sys.executable, "-m", "stratus.cli"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STRATUS, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_serves_the_gateway_and_tokens_are_managed_from_the_shell(tmp_path: Path) -> None:
    data = tmp_path / "data"
    address, http = f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    up = subprocess.Popen(
        [*STRATUS, "up", "--listen", address, "--data-dir", str(data), "--http", http],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://{http}"
    try:
        assert wait_until(lambda: answers(url), timeout=60)
        with stratus.connect(address, data_dir=data) as app:

            @app.function
            def double(ctx: object, x: int) -> int:
                return 2 * x

        created = cli("token", "create", "ops", "--data-dir", str(data), cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        called = httpx.post(
            f"{url}/v1/functions/double:invoke", json={"args": [21]}, headers=headers
        )
        assert called.json()["result"] == 42
        listed = cli("token", "list", "--data-dir", str(data), cwd=tmp_path)
        assert "ops" in listed.stdout and token not in listed.stdout
        digest = next(line.split()[0] for line in listed.stdout.splitlines() if "ops" in line)
        revoked = cli("token", "revoke", digest, "--data-dir", str(data), cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        # the gateway trusts a checked token for at most 5 s (GatewayConfig.token_cache_s)
        assert wait_until(
            lambda: httpx.get(f"{url}/v1/functions", headers=headers).status_code == 401,
            timeout=15,
        )
        missing = cli("token", "revoke", "deadbeefdead", "--data-dir", str(data), cwd=tmp_path)
        assert missing.returncode != 0
    finally:
        up.terminate()
        output = up.communicate(timeout=30)[0]
    assert "HTTP gateway on" in output
    # the gateway went with its server
    assert wait_until(lambda: not answers(url), timeout=10)


def test_tenants_are_managed_from_the_shell_and_used_from_python(tmp_path: Path) -> None:
    data = tmp_path / "data"
    address, http = f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    up = subprocess.Popen(
        [*STRATUS, "up", "--listen", address, "--data-dir", str(data), "--http", http],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, where = f"http://{http}", ("--data-dir", str(data))
    try:
        assert wait_until(lambda: answers(url), timeout=60)
        with stratus.connect(address, data_dir=data) as app:

            @app.function(name="acme::double")
            def double(ctx: object, x: int) -> int:
                return 2 * x

        created = cli("tenant", "create", "acme", "--max-concurrent", "5", *where, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        assert cli("tenant", "create", "Not Valid", *where, cwd=tmp_path).returncode != 0
        token = cli("tenant", "token", "acme", *where, cwd=tmp_path).stdout.strip()
        with stratus.connect(url, token=token) as tenant:
            assert tenant.function("double")(21) == 42
            assert tenant.functions() == ["double"]

        def listed() -> str:
            return cli("tenant", "list", *where, cwd=tmp_path).stdout

        # metering records reach the store a moment after the call
        assert wait_until(lambda: "calls=1 " in listed(), timeout=30)
        assert "max_concurrent=5" in listed() and token not in listed()
        deleted = cli("tenant", "delete", "acme", *where, cwd=tmp_path)
        assert deleted.returncode == 0 and "1 tokens revoked" in deleted.stdout
        with stratus.connect(url, token=token) as gone:

            def refused() -> bool:
                try:
                    gone.functions()
                except stratus.AccessDenied:
                    return True
                return False

            assert wait_until(refused, timeout=15)  # a checked token is trusted 5 s at most
    finally:
        up.terminate()
        up.wait(timeout=30)
