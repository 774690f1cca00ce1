"""Header spoofing: a client that is not on loopback must not pass as
loopback (and so as an anonymous caller, when ``auth.allow_anonymous_loopback``
is on) by sending ``X-Forwarded-For: 127.0.0.1``, ``Forwarded: for=127.0.0.1``
or ``X-Real-IP: 127.0.0.1``.

How the test gets a non-loopback client on one machine, honestly: binding the
gateway to another 127.x address is still loopback, so instead the test makes
a network namespace joined to this one by a veth pair (link-local addresses,
169.254.213.1 here and .2 there), serves the gateway on 169.254.213.1 and
sends the requests with curl from inside the namespace. That needs root and
iproute2 (as on the dev machines and CI); without them the test is skipped,
saying so. A loopback request without a key is served, so the refusals below
are the headers failing, not the gateway refusing everyone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from seawall.app import create_app
from seawall.config import parse_settings
from seawall.serving import uvicorn_options
from tests.security.conftest import MASTER, config
from tests.servers import FakeUpstreamClient, ServerThread

pytestmark = pytest.mark.timeout(120)

HOST, PEER = "169.254.213.1", "169.254.213.2"
SPOOFS: list[dict[str, str]] = [
    {"x-forwarded-for": "127.0.0.1"},
    {"x-forwarded-for": "127.0.0.1, 127.0.0.1"},
    {"x-forwarded-for": "::1"},
    {"forwarded": "for=127.0.0.1"},
    {"forwarded": 'for="[::1]"'},
    {"x-real-ip": "127.0.0.1"},
    {"x-forwarded-for": "127.0.0.1", "forwarded": "for=127.0.0.1", "x-real-ip": "127.0.0.1",
     "x-forwarded-host": "localhost", "host": "localhost"},
]


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("curl") is None:
        pytest.skip("needs root, iproute2 and curl to make a non-loopback client (netns)")
    tag = uuid.uuid4().hex[:6]
    ns, here, there = f"swiso{tag}", f"swa{tag}", f"swb{tag}"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{HOST}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", ns, "addr", "add", f"{PEER}/30", "dev", there)
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        _ip("link", "del", here, check=False)
        _ip("netns", "del", ns, check=False)
        pytest.skip(f"cannot make a network namespace here: {e.stderr!r}")
    try:
        yield ns
    finally:
        _ip("link", "del", here, check=False)
        _ip("netns", "del", ns, check=False)


@contextmanager
def gateway_on(host: str, upstream: FakeUpstreamClient, tmp_path: Any,
               **server: Any) -> Iterator[str]:
    cfg = config(upstream)
    cfg["auth"] = {"master_key": MASTER, "allow_anonymous_loopback": True}
    app = create_app(parse_settings({"data_dir": str(tmp_path / "data"), **cfg}, env={}))
    options = {**uvicorn_options(app.state.services.settings), "timeout_graceful_shutdown": 5,
               **server}
    thread = ServerThread(app, host=host, **options)
    thread.start(timeout=120)
    try:
        yield thread.url
    finally:
        thread.stop(timeout=30)


def from_netns(ns: str, url: str, headers: dict[str, str]) -> int:
    """The status of ``GET url`` sent by curl from inside the namespace."""
    args = ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
            "--max-time", "20"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    run = subprocess.run([*args, url], capture_output=True, text=True, timeout=30)
    return int(run.stdout or 0)


def test_forwarding_headers_do_not_make_a_remote_client_loopback(
        netns: str, upstream: FakeUpstreamClient, tmp_path: Any) -> None:
    with gateway_on(HOST, upstream, tmp_path) as url:
        path = url + "/v1/collections"
        # The client is reachable and the route needs a key from there.
        assert from_netns(netns, path, {"authorization": f"Bearer {MASTER}"}) == 200
        assert from_netns(netns, path, {}) == 401
        for spoof in SPOOFS:
            assert from_netns(netns, path, spoof) == 401, spoof
            assert from_netns(netns, url + "/admin/cache", spoof) == 401, spoof
    # And the same gateway on loopback does serve a keyless caller (control).
    with gateway_on("127.0.0.1", upstream, tmp_path) as url:
        assert httpx.get(url + "/v1/collections").status_code == 200


def test_a_trusting_proxy_setting_does_not_open_anonymous_access(
        netns: str, upstream: FakeUpstreamClient, tmp_path: Any) -> None:
    """An operator behind a load balancer sets ``FORWARDED_ALLOW_IPS=*`` (uvicorn's
    setting, common in container images): then uvicorn believes any sender's
    ``X-Forwarded-For`` and a remote client that says ``127.0.0.1`` is served
    as loopback. Anonymous access must not follow a header."""
    with gateway_on(HOST, upstream, tmp_path, forwarded_allow_ips="*") as url:
        assert from_netns(netns, url + "/v1/collections", {}) == 401
        assert from_netns(netns, url + "/v1/collections",
                          {"x-forwarded-for": "127.0.0.1"}) == 401
