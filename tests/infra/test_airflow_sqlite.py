"""Local Airflow over SQLite: its connections wait for a lock, and the REST client rides out a 503.

The CI machine once saw `POST /api/v2/backfills` answered with HTTP 503 ("Database is locked")
while the scheduler and DAG processor wrote the same SQLite file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infra.airflow_api import RETRY_UNAVAILABLE, AirflowAPIError, AirflowClient
from infra.airflow_local import SQLITE_CONNECT_ARGS, airflow_environment
from infra.settings import Settings

BUSY_TIMEOUT_PROBE = """
import asyncio
from airflow import settings

settings.configure_orm()
with settings.engine.connect() as sync:
    print("busy_timeout", sync.connection.dbapi_connection.execute("pragma busy_timeout").fetchone()[0])


async def probe() -> None:
    async with settings.async_engine.connect() as conn:
        raw = await conn.get_raw_connection()
        cursor = await raw.driver_connection.execute("pragma busy_timeout")
        print("busy_timeout", (await cursor.fetchone())[0])
        await raw.driver_connection.close()


asyncio.run(probe())
"""


def test_airflows_sqlite_connections_wait_for_a_lock(tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"), mlflow_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    env = airflow_environment(settings, tmp_path / "airflow")
    probe = subprocess.run(
        [sys.executable, "-c", BUSY_TIMEOUT_PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr
    waits_ms = [int(line.split()[1]) for line in probe.stdout.splitlines() if line.startswith("busy_timeout")]
    assert waits_ms == [SQLITE_CONNECT_ARGS["timeout"] * 1_000] * 2  # sync and async engines
    assert SQLITE_CONNECT_ARGS["timeout"] > 5  # sqlite3's default


class _LockedThenFine(BaseHTTPRequestHandler):
    """`/auth/token` answers a token; `/api/v2/backfills` answers 503 `locked` times, then 200."""

    locked = 0
    backfill_calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/auth/token":
            self._answer(201, {"access_token": "t"})
            return
        type(self).backfill_calls += 1
        if type(self).backfill_calls <= type(self).locked:
            self._answer(503, {"detail": "Database is locked."})
        else:
            self._answer(200, {"id": 1, "dag_id": "d"})

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_LockedThenFine]]]:
    """A stand-in api-server on a free loopback port (only HTTP is under test here)."""
    handler = type("Handler", (_LockedThenFine,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_a_locked_backfill_is_retried_until_it_is_created(api_server) -> None:
    url, handler = api_server
    handler.locked = 2
    backfill = AirflowClient(url, "admin", "pw").create_backfill("d", "2026-01-01", "2026-01-03")
    assert backfill == {"id": 1, "dag_id": "d"}
    assert handler.backfill_calls == 3


def test_a_lock_that_outlasts_the_retries_names_the_status(api_server) -> None:
    url, handler = api_server
    handler.locked = 100
    client = AirflowClient(url, "admin", "pw", retry=RETRY_UNAVAILABLE.new(total=2, backoff_factor=0))
    with pytest.raises(AirflowAPIError, match=r"HTTP 503.*locked") as raised:
        client.create_backfill("d", "2026-01-01", "2026-01-03")
    assert raised.value.status == 503
    assert handler.backfill_calls == 3  # the first call and two retries
