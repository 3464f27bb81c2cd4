"""The deployment files are files, and each is checked: platform/nginx/flowdeck.conf by Debian's
nginx (`nginx -t`, and in front of two real Daphne processes), the systemd units by
`systemd-analyze verify`, docker-compose.yml and the Dockerfile against ops.processes.

nginx and systemd-analyze come from the project's set-up (the Makefile's `nginx` target, which
.ci/run reaches through `make test`); under CI a missing one fails these tests, never skips
them. systemd-analyze verifies offline, in a root directory made here (the units, a stand-in
for the virtualenv's python, this machine's own system units): the units' paths are
production's, so they cannot be checked against this machine's file system directly.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ops.processes import beat_command, die_with_parent, web_command, worker_command
from tests.conftest import IN_CI
from tests.live import LiveStack, free_port, subprocess_env, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ROOT / "platform"
SHIPPED_NGINX = PLATFORM / "nginx" / "flowdeck.conf"
UNITS = PLATFORM / "systemd"
VENV_PYTHON = "/srv/flowdeck/.venv/bin/python"  # the units' virtualenv
NGINX = "/usr/sbin/nginx"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
# The SSE endpoints (docs/api.md) and the upload endpoint, as requests would name them.
SSE_PATHS = [
    "/api/w/acme/runs/0b7c/stream",
    "/api/w/acme/flows/12/run",
    "/api/w/acme/v1/chat/completions",
    "/embed/tok-en/api/runs/0b7c/events",
]
UPLOAD_PATH = "/api/w/acme/knowledge-bases/3/documents"


def require_tool(path: str, install: str) -> None:
    if not Path(path).exists():
        message = f"{path} is missing: {install}"
        if IN_CI:
            pytest.fail(message + " (the project's set-up must install it)")
        pytest.skip(message)


# --- nginx -----------------------------------------------------------------------------------


def render(**values: str) -> str:
    """flowdeck.conf with its documented placeholders replaced (platform/nginx/render.sh)."""
    env = {"PATH": "/usr/bin:/bin", **{f"FLOWDECK_{k.upper()}": v for k, v in values.items()}}
    result = subprocess.run(
        ["sh", str(PLATFORM / "nginx" / "render.sh"), str(SHIPPED_NGINX)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def main_config(directory: Path, site: str) -> Path:
    """An nginx main configuration around the rendered site file, as Debian's nginx.conf
    includes conf.d/*.conf, with every path nginx writes under `directory`."""
    (directory / "flowdeck.conf").write_text(site)
    path = directory / "nginx.conf"
    # Workers as this user: they read and write under `directory` (a private temporary
    # directory); as root nginx would otherwise run them as nobody.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    path.write_text(
        f"""
{user}
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log {directory}/access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/flowdeck.conf;
}}
"""
    )
    return path


def nginx_test(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([NGINX, "-t", "-c", str(config)], capture_output=True, text=True)


def test_render_with_nothing_set_is_the_shipped_file():
    assert render() == SHIPPED_NGINX.read_text()


def test_render_replaces_only_the_documented_placeholders():
    shipped = SHIPPED_NGINX.read_text()
    header = "\n".join(line for line in shipped.splitlines() if line.startswith("#"))
    used = set(re.findall(r"FLOWDECK_[A-Z_]+", (PLATFORM / "nginx" / "render.sh").read_text()))
    assert used and all(name in header for name in used), "render.sh sets an undocumented value"

    rendered = render(
        server_name="deck.test",
        tls_cert="/c.pem",
        tls_key="/k.pem",
        upstreams="10.0.0.1:9001 10.0.0.2:9001 10.0.0.3:9001",
        http_port="8080",
        https_port="8443",
        static_root="/srv/static/",
    )
    changed = [line for line in shipped.splitlines() if line not in rendered.splitlines()]
    placeholders = [
        "flowdeck.example.com",
        "server 127.0.0.1:800",
        "listen 80;",
        "listen 443 ",
        "/var/lib/flowdeck/staticfiles/",
    ]
    assert changed and all(any(p in line for p in placeholders) for line in changed), changed
    assert rendered.count("    server 10.0.0.") == 3
    assert "flowdeck.example.com" not in "\n".join(
        line for line in rendered.splitlines() if not line.startswith("#")
    )


def test_nginx_accepts_the_shipped_configuration(tmp_path):
    require_tool(NGINX, "make nginx (Debian's nginx)")
    cert, key = self_signed(tmp_path)
    config = main_config(tmp_path, render(tls_cert=str(cert), tls_key=str(key)))
    result = nginx_test(config)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr

    # The check can fail: without its certificate the same file is refused.
    broken = main_config(tmp_path, render(tls_cert=str(tmp_path / "missing.pem"), tls_key=str(key)))
    assert nginx_test(broken).returncode != 0


def location_blocks(conf: str) -> dict[str, str]:
    """Each `location` of the TLS server: its match -> its body."""
    tls_server = conf[conf.index("listen 443") :]
    return {
        match.group(1).strip(): match.group(2)
        for match in re.finditer(r"location\s+([^{]+)\{((?:[^{}]|\{[^{}]*\})*)\}", tls_server)
    }


def test_streams_websockets_and_uploads_get_their_own_locations():
    blocks = location_blocks(SHIPPED_NGINX.read_text())
    regex_blocks = {m.removeprefix("~").strip(): body for m, body in blocks.items() if m.startswith("~")}
    (sse,) = [body for rx, body in regex_blocks.items() if re.fullmatch(rx, SSE_PATHS[0])]
    assert "proxy_buffering off;" in sse and "proxy_read_timeout 1h;" in sse
    for path in SSE_PATHS:  # every SSE endpoint lands in that block, and only there
        assert [rx for rx in regex_blocks if re.fullmatch(rx, path)] == [
            rx for rx, body in regex_blocks.items() if body is sse
        ], path
    (upload,) = [body for rx, body in regex_blocks.items() if re.fullmatch(rx, UPLOAD_PATH)]
    size = re.search(r"client_max_body_size (\d+)m;", upload)
    from django.conf import settings

    assert size and int(size.group(1)) * 2**20 > settings.FLOWDECK_KNOWLEDGE["MAX_FILE_BYTES"]
    assert "proxy_request_buffering off;" in upload
    ws = blocks["/ws/"]
    for header in ("Upgrade $http_upgrade", "Connection $connection_upgrade", "Host $host"):
        assert f"proxy_set_header {header};" in ws  # a location's own headers replace all
    for probe in ("= /healthz", "= /readyz"):
        assert "access_log off;" in blocks[probe]


# --- systemd ---------------------------------------------------------------------------------


def exec_start(unit: str) -> list[str]:
    """The unit's ExecStart as Celery/Daphne receive it (systemd turns `%%` into `%`)."""
    text = (UNITS / unit).read_text()
    (line,) = re.findall(r"^ExecStart=(.+)$", text, flags=re.M)
    return [word.replace("%%", "%") for word in shlex.split(line)]


def test_the_units_run_what_ops_processes_builds():
    assert exec_start("flowdeck-web@.service") == web_command(
        python=VENV_PYTHON, host="127.0.0.1", port="%i", proxy_headers=True
    )
    assert exec_start("flowdeck-worker@.service") == worker_command(
        python=VENV_PYTHON, concurrency=32, name="%i"
    )
    assert exec_start("flowdeck-beat.service") == beat_command(
        python=VENV_PYTHON, schedule="/var/lib/flowdeck/celerybeat-schedule"
    )


def verify_root(tmp_path: Path, units: dict[str, str]) -> Path:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
    python = root / VENV_PYTHON.lstrip("/")
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    return root


def systemd_verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={root}", *units], capture_output=True, text=True
    )


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    require_tool(SYSTEMD_ANALYZE, "apt-get install systemd")
    shipped = {path.name: path.read_text() for path in UNITS.glob("*.service")}
    assert set(shipped) == {"flowdeck-web@.service", "flowdeck-worker@.service", "flowdeck-beat.service"}
    root = verify_root(tmp_path, shipped)
    result = systemd_verify(
        root, "flowdeck-web@8001.service", "flowdeck-worker@runs1.service", "flowdeck-beat.service"
    )
    # Exit 0 and not one warning (an unknown key or a bad value is only a warning).
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    # The check can fail: a misspelt key is reported.
    typo = shipped["flowdeck-beat.service"].replace("RestartSec=2", "RestartSecs=2")
    root = verify_root(tmp_path / "typo", {"flowdeck-beat.service": typo})
    assert "RestartSecs" in systemd_verify(root, "flowdeck-beat.service").stderr


def test_the_env_example_names_what_production_settings_require():
    names = {
        line.split("=", 1)[0]
        for line in (UNITS / "flowdeck.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    required = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"}
    assert required | {"FLOWDECK_ENCRYPTION_KEY", "FLOWDECK_AUDIT_KEY"} <= names
    for unit in UNITS.glob("*.service"):
        assert "EnvironmentFile=/etc/flowdeck/env" in unit.read_text()


# --- Dockerfile and docker-compose.yml -------------------------------------------------------


def dockerfile_stages() -> dict[str, tuple[str, str]]:
    """Each stage's name -> (base image, its instructions as text)."""
    text = (ROOT / "Dockerfile").read_text()
    parts = re.split(r"^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    return {parts[i + 1]: (parts[i], parts[i + 2]) for i in range(1, len(parts) - 1, 3)}


def json_instruction(body: str, name: str) -> list[str]:
    (line,) = re.findall(rf"^{name}\s+(\[.*\])\s*$", body, flags=re.M)
    return json.loads(line)


def test_the_dockerfile_builds_the_front_end_with_node_and_runs_slim_python_as_a_user():
    stages = dockerfile_stages()
    assert list(stages) == ["frontend", "python-deps", "runtime", "nginx"]
    node, frontend = stages["frontend"]
    assert node.startswith("node:") and "npm ci" in frontend and "npm run build" in frontend
    python, runtime = stages["runtime"]
    assert python.startswith("python:") and "-slim" in python
    (user,) = re.findall(r"^USER\s+(\S+)", runtime, flags=re.M)
    assert user not in {"root", "0"}
    assert "manage.py collectstatic --noinput" in runtime
    assert "COPY --from=frontend /src/static/build /app/static/build" in runtime
    assert json_instruction(runtime, "CMD") == web_command(
        python="python", host="0.0.0.0", port=8000, proxy_headers=True
    )
    debian, nginx = stages["nginx"]
    assert debian.startswith("debian:") and "platform/nginx/flowdeck.conf" in nginx
    # Every COPY --from names an earlier stage.
    names = list(stages)
    for index, (_, body) in enumerate(stages.values()):
        for source in re.findall(r"COPY --from=(\S+)", body):
            assert source in names[:index]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_postgres_with_pgvector_redis_two_webs_two_workers_beat_and_nginx():
    services = compose()["services"]
    assert set(services) == {
        "db", "redis", "migrate", "web1", "web2", "worker1", "worker2", "beat", "nginx"
    }
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:")
    stages = dockerfile_stages()
    for name in ("migrate", "web1", "web2", "worker1", "worker2", "beat", "nginx"):
        assert services[name]["build"]["target"] in stages


def test_compose_commands_are_ops_processes_and_health_is_checked_by_readyz():
    services = compose()["services"]
    for web in ("web1", "web2"):
        assert services[web]["command"] == web_command(
            python="python", host="0.0.0.0", port=8000, proxy_headers=True
        )
        assert "http://127.0.0.1:8000/readyz" in " ".join(services[web]["healthcheck"]["test"])
    for worker in ("worker1", "worker2"):
        assert services[worker]["command"] == worker_command(python="python", concurrency=32)
        assert services[worker]["healthcheck"]["test"] == ["CMD", "python", "-m", "ops.worker_health"]
    assert services["beat"]["command"] == beat_command(
        python="python", schedule="/var/lib/flowdeck/celerybeat-schedule"
    )
    for name in ("web1", "web2", "worker1", "worker2", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["db"] == {"condition": "service_healthy"}
        assert "data:/var/lib/flowdeck" in services[name]["volumes"]  # uploads: web -> worker
    assert services["db"]["healthcheck"] and services["redis"]["healthcheck"]
    # nginx proxies to exactly the web services, once they are ready.
    upstreams = services["nginx"]["environment"]["FLOWDECK_UPSTREAMS"].split()
    assert upstreams == ["web1:8000", "web2:8000"]
    assert set(services["nginx"]["depends_on"]) == {"web1", "web2"}


def test_the_image_leaves_out_local_environments_and_build_output():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".git", ".venv", "**/node_modules", "static/build", "var", ".env"):
        assert entry in ignored


# --- nginx in front of real Daphne processes -------------------------------------------------


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_nginx_proxies_websocket_runs_sse_static_and_probes_across_two_daphnes(
    tmp_path, live_stack, workspace_a, erin_editor, token_for
):
    """The shipped configuration, its placeholders replaced, in front of two Daphnes (with
    the session's worker): HTTP is redirected, a run goes over WSS and its stream over SSE,
    both exactly the log; static files come from nginx; probes are answered and not logged;
    with one Daphne killed, requests still succeed on the other."""
    require_tool(NGINX, "make nginx (Debian's nginx)")
    from tests import flowgraphs
    from tests.wsclient import (
        Received,
        assert_exactly_the_log,
        collect_until_completed,
        connect,
        start_run,
        stored_log,
    )

    http_port, https_port = free_port(), free_port()
    public = f"https://127.0.0.1:{https_port}"
    env = subprocess_env(FLOWDECK_HTTPS="1", CSRF_TRUSTED_ORIGINS=public)
    daphnes = [LiveStack(port=free_port(), env=env) for _ in range(2)]
    for daphne in daphnes:
        daphne.start_daphne(proxy_headers=True)
    static = tmp_path / "static"
    static.mkdir()
    (static / "probe.txt").write_text("served by nginx")
    cert, key = self_signed(tmp_path)
    site = render(
        server_name="127.0.0.1",
        tls_cert=str(cert),
        tls_key=str(key),
        upstreams=" ".join(f"127.0.0.1:{d.port}" for d in daphnes),
        http_port=f"127.0.0.1:{http_port}",
        https_port=f"127.0.0.1:{https_port}",
        static_root=f"{static}/",
    )
    config = main_config(tmp_path, site)
    nginx = subprocess.Popen(
        [NGINX, "-c", str(config), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
    )
    tls = ssl.create_default_context(cafile=str(cert))
    try:
        wait_for_port(https_port, nginx, 20)
        client = httpx.Client(base_url=public, verify=tls, timeout=30)
        plain = httpx.get(f"http://127.0.0.1:{http_port}/accounts/login/", timeout=30)
        assert plain.status_code == 301
        assert plain.headers["location"] == "https://127.0.0.1/accounts/login/"
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=30).status_code == 200
        assert client.get("/readyz").json()["status"] == "ok"
        assert client.get("/static/probe.txt").text == "served by nginx"
        login = client.get("/accounts/login/")
        assert login.status_code == 200 and "secure" in login.headers["set-cookie"].lower()

        token = token_for(workspace_a, erin_editor)
        flow = flowgraphs.demo_flow(workspace_a, erin_editor, reply="one two three four", delay_ms=30)

        async def over_wss() -> tuple[str, Received]:
            received = Received()
            ws, _ = await connect(f"wss://127.0.0.1:{https_port}", "acme", token=token, origin=public, ssl=tls)
            run_id = await start_run(ws, {"action": "run", "flow": flow.pk, "inputs": {"input": "hi"}})
            await collect_until_completed(ws, run_id, received)
            await ws.close()
            return run_id, received

        run_id, received = asyncio.run(over_wss())
        assert_exactly_the_log(received, run_id)

        # The same run's log over SSE through nginx, from the start.
        events = []
        with client.stream(
            "GET", f"/api/w/acme/runs/{run_id}/stream", headers={"Authorization": f"Bearer {token}"}
        ) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line.removeprefix("data:")))
                    if events[-1]["event"] == "completed":
                        break
        assert events == stored_log(run_id)

        daphnes[0].kill("daphne")  # nginx moves on to the other one
        assert [client.get("/readyz").status_code for _ in range(4)] == [200] * 4
        client.close()
    finally:
        nginx.terminate()
        nginx.wait(10)
        for daphne in daphnes:
            daphne.stop()
    time.sleep(0.1)
    access = (tmp_path / "access.log").read_text()
    assert "GET /ws/w/acme/exec" in access and f"/api/w/acme/runs/{run_id}/stream" in access
    assert "/readyz" not in access and "/healthz" not in access
