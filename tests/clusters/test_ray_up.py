"""clusters/local.yaml brought up for real: `ray up` logs in by SSH to a private sshd on
127.0.0.1 (started here, in its own PID namespace), syncs and installs this checkout with the
YAML's own setup commands, starts Ray with its own start commands; a smoke search is submitted
with `ray job submit`; its results are checked; `ray down` stops it all.

The "node" is this machine, so a few things are arranged around the YAML (the test copy of the
YAML itself changes only what must change; each change is commented in `_test_config`):

- the sshd runs in a new PID namespace (`unshare --pid`): `ray stop`, run as root by the YAML's
  head_start_ray_commands and by `ray down`, kills every Ray process it can see; there it sees
  only the node's own. Killing the namespace at teardown ends whatever the node left running.
- the node's home is a temporary directory (sshd `SetEnv HOME=`): `~/exitsearch`, `~/.bashrc`,
  `~/.ray/auth_token`, `~/ray_bootstrap_*` of the YAML land there, not in root's home. Its
  Python is a venv over this interpreter (`--system-site-packages`: torch, ray... are reused),
  so the YAML's `pip install -e ~/exitsearch "ray[default]==2.60.0"` installs into the venv and
  never replaces this interpreter's own install of the project. Its Ray temp dir is its own
  (RAY_TMPDIR), so local `ray.init()` of other tests never finds this cluster's files.
- the sshd listens on a free port: Ray's SSH runner always connects to port 22
  (ray/autoscaler/_private/command_runner.py, SSHOptions: no Port option; the local provider
  has no port either), so the copy reaches it through `auth: ssh_proxy_command`.
- `ray job` needs `ray[default]` on the client (ray/dashboard/modules/job/sdk.py refuses
  without aiohttp); the node's venv has it after setup, so the job commands run from there.

Marked slow and cluster (`.ci/run` runs it). Needs root (it starts sshd and logs in as root),
`unshare`, and openssh-server + rsync (installed with apt-get when missing): skipped with the
reason otherwise. RAY_UP_TRANSCRIPT=path writes the key lines of the run to that file.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ray_cli import ray_cli
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = ROOT / "clusters" / "local.yaml"
SSHD = Path("/usr/sbin/sshd")
TRIALS = 2
RAY_PROCESS_NAMES = ("raylet", "gcs_server", "dashboard", "ray::", "default_worker", "runtime_env_agent",
                     "dashboard_agent", "log_monitor", "monitor.py")


class Transcript:
    """Key lines of the run, printed (pytest -s) and written to RAY_UP_TRANSCRIPT when set."""

    def __init__(self):
        self.path = os.environ.get("RAY_UP_TRANSCRIPT")
        self.lines: list[str] = []
        self.t0 = time.monotonic()

    def __call__(self, label: str, text: str = "") -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f} s]"
        body = text.rstrip("\n")
        line = f"{stamp} {label}" + (":\n" + "\n".join("    " + t for t in body.splitlines()) if body else "")
        self.lines.append(line)
        print(line, flush=True)
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text("\n".join(self.lines) + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, n: int) -> str:
    """The last n lines, without ssh's chatter ("Shared connection to ... closed.", host key warnings)."""
    lines = [line for line in text.rstrip().splitlines() if not line.startswith(("Shared connection to", "Warning: "))]
    return "\n".join(lines[-n:])


def _run(cmd, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _ensure_package(binary: str, package: str) -> None:
    if shutil.which(binary) or Path(binary).exists():
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"{binary} is missing and there is no apt-get to install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        p = _run(["apt-get", "install", "-y", "--no-install-recommends", package], 300, env=env)
        if p.returncode != 0:  # the package lists may be missing (a fresh image): update once
            _run(["apt-get", "update"], 300, env=env)
            p = _run(["apt-get", "install", "-y", "--no-install-recommends", package], 300, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{binary} is missing and `apt-get install {package}` did not finish in 300 s")
    if p.returncode != 0 or not (shutil.which(binary) or Path(binary).exists()):
        pytest.skip(f"{binary} is missing and `apt-get install -y {package}` failed "
                    f"(exit {p.returncode}): {_tail(p.stdout + p.stderr, 3)}")


def _ns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _ray_processes_in(ns: str) -> list[str]:
    """Ray processes running in the node's PID namespace (and only there)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _ns_of(int(entry.name)) != ns:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(name in cmd for name in RAY_PROCESS_NAMES):
            out.append(f"{entry.name} {cmd[:120]}")
    return out


@pytest.fixture(scope="module")
def node():
    """A private sshd on 127.0.0.1:<free port> in its own PID namespace, with a throwaway key,
    a temporary home and a Python venv over this interpreter; everything it started is killed
    (the whole namespace) and its files removed at teardown."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it starts its own sshd (privilege separation) and `ray up` logs in as root")
    if shutil.which("unshare") is None:
        pytest.skip("`unshare` (util-linux) is missing: without a PID namespace the YAML's `ray stop` would "
                    "kill every Ray process on this machine")
    p = _run(["unshare", "--pid", "--fork", "--mount-proc", "true"], 30)
    if p.returncode != 0:
        pytest.skip("cannot make a PID namespace (`unshare --pid --fork --mount-proc true`: "
                    f"{_tail(p.stderr, 1)}): without one the YAML's `ray stop` would kill every Ray process here")
    _ensure_package(str(SSHD), "openssh-server")
    _ensure_package("ssh", "openssh-client")
    _ensure_package("rsync", "rsync")  # Ray syncs file_mounts with rsync, on both ends

    tmp = Path(tempfile.mkdtemp(prefix="ru", dir="/tmp"))  # short: Ray's socket paths must fit
    proc = None
    try:
        key = tmp / "id_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ray-up-test", "-f", str(key)], 60, check=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "host_ed25519")], 60, check=True)
        home = tmp / "home"
        venv = home / "venv"
        home.mkdir()
        # the node's Python: this interpreter's packages, its own site for what the YAML installs
        _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], 120, check=True)
        # `ray` run by the venv's Python (the interpreter's `ray` script would not see the venv)
        (venv / "bin" / "ray").write_text(f"#!{venv}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\n"
                                          "sys.exit(main())\n")
        (venv / "bin" / "ray").chmod(0o755)
        (home / ".bashrc").write_text(
            "# the test node: its Python first, its own Ray temp dir\n"
            f"export PATH={venv}/bin:{Path(sys.executable).parent}:$PATH\n"
            f"export RAY_TMPDIR={tmp}/rt\n")
        (tmp / "rt").mkdir()
        port = _free_port()
        config = tmp / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {tmp}/host_ed25519",
            f"AuthorizedKeysFile {key}.pub", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"PidFile {tmp}/sshd.pid", f"SetEnv HOME={home}", "MaxStartups 100:30:200", "MaxSessions 50",
            "AllowTcpForwarding yes", ""]))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's compiled-in privilege separation dir
        p = _run([str(SSHD), "-t", "-f", str(config)], 30)
        if p.returncode != 0:
            pytest.fail(f"sshd refuses its config: {p.stderr}")
        log = (tmp / "sshd.log").open("w")
        proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", str(SSHD), "-D", "-e",
                                 "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ssh = ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR", "root@127.0.0.1"]
        t0 = time.monotonic()
        while True:
            p = _run(ssh + ["echo $HOME"], 30)
            if p.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() - t0 > 30:
                pytest.fail(f"the private sshd does not accept logins: {p.stderr}\n{(tmp / 'sshd.log').read_text()}")
            time.sleep(0.3)
        assert p.stdout.strip() == str(home), ("sshd did not set the node's HOME", p.stdout)
        children = [c for c in _children(proc.pid)]
        ns = _ns_of(children[0]) if children else None
        assert ns and ns != _ns_of(os.getpid()), "sshd is not in its own PID namespace"
        yield {"tmp": tmp, "key": key, "port": port, "home": home, "venv": venv, "ns": ns, "ssh": ssh}
    finally:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the namespace's init dies: the kernel kills the rest
            except ProcessLookupError:
                pass
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _test_config(node, name: str, token: Path, gcs_port: int, dashboard_port: int) -> dict:
    """clusters/local.yaml with only what must change to bring it up here."""
    config = yaml.safe_load(LOCAL_YAML.read_text())
    # a name of its own: the local provider keeps its state in /tmp/cluster-<name>.state
    config["cluster_name"] = name
    # one node, the head: this machine; no workers
    config["max_workers"] = 0
    config["provider"]["head_ip"] = "127.0.0.1"
    config["provider"]["worker_ips"] = []
    # root, with the throwaway key the private sshd accepts
    config["auth"]["ssh_user"] = "root"
    config["auth"]["ssh_private_key"] = str(node["key"])
    # Ray's SSH runner always dials port 22: reach the private sshd's port through a proxy command
    # (plain ssh -W, so nothing beyond openssh is needed; `nc %h PORT` does the same)
    config["auth"]["ssh_proxy_command"] = (
        f"ssh -i {node['key']} -p {node['port']} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        f"-o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR -W 127.0.0.1:{node['port']} root@127.0.0.1")
    # a throwaway cluster token, not the user's ~/.ray/auth_token (the mount's target is unchanged)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    config["file_mounts"]["~/.ray/auth_token"] = str(token)
    # `~/exitsearch: .` stays: `ray up` runs from the repository root, as the README says.
    # setup_commands stay as they are (the node's python3 is a venv: see the module docstring).
    # Free ports instead of 6379 / 8265, which another Ray on this machine may hold.
    config["head_start_ray_commands"] = [
        c.replace("--port=6379", f"--port={gcs_port}").replace(
            "--dashboard-host=127.0.0.1", f"--dashboard-host=127.0.0.1 --dashboard-port={dashboard_port}")
        for c in config["head_start_ray_commands"]]
    config["worker_start_ray_commands"] = [c.replace(":6379", f":{gcs_port}")
                                           for c in config["worker_start_ray_commands"]]
    assert any(f"--port={gcs_port}" in c and f"--dashboard-port={dashboard_port}" in c
               for c in config["head_start_ray_commands"])
    return config


def _host_env(tmp: Path) -> dict[str, str]:
    """For `ray up` / `ray down` here: what they leave on this machine goes to the test's tmp
    (the local provider's cluster-NAME.state/.lock under RAY_TMPDIR/ray, local/config.py; the
    config cache ray-config-HASH under TMPDIR, written by `ray down`, commands.py
    teardown_cluster -> _bootstrap_config, which has no --no-config-cache)."""
    host = tmp / "host"
    host.mkdir(exist_ok=True)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(host), "TMPDIR": str(host)}
    env.pop("RAY_ADDRESS", None)
    return env


def _ssh_control_dir(cluster_name: str) -> Path:
    """Ray's SSH ControlPath directory for this cluster (command_runner.py, SSHCommandRunner)."""
    user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
    return Path(f"/tmp/ray_ssh_{user}") / hashlib.sha256(cluster_name.encode()).hexdigest()[:10]


def test_ray_up_job_submit_and_ray_down_on_local_yaml(node, tmp_path):
    note = Transcript()
    name = f"exitsearch-test-{secrets.token_hex(3)}"
    token = node["tmp"] / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    gcs_port, dashboard_port = _free_port(), _free_port()
    config = _test_config(node, name, token, gcs_port, dashboard_port)
    yaml_path = node["tmp"] / "cluster.yaml"
    yaml_path.write_text(yaml.safe_dump(config, sort_keys=False))
    storage = node["tmp"] / "runs"  # the "shared" storage: node and test are one machine
    storage.mkdir()
    env = _host_env(node["tmp"])
    ray = ray_cli()
    # the client side of `ray job`: RAY_AUTH_MODE=token and the cluster's token (README, Security)
    job_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    job_ray = [str(node["venv"] / "bin" / "ray"), "job"]
    address = f"http://127.0.0.1:{dashboard_port}"
    note("test copy of clusters/local.yaml", f"cluster_name={name} head_ip=127.0.0.1 worker_ips=[] "
         f"ssh_user=root sshd=127.0.0.1:{node['port']} gcs port {gcs_port} dashboard {address}")
    t0 = time.monotonic()
    up = None
    try:
        up = _run([ray, "up", "-y", "--no-config-cache", "--disable-usage-stats", str(yaml_path)], 900, cwd=ROOT, env=env)
        note(f"ray up (exit {up.returncode}, {time.monotonic() - t0:.0f} s)", _tail(up.stdout + up.stderr, 12))
        assert up.returncode == 0, up.stdout[-6000:] + up.stderr[-3000:]
        assert (node["home"] / "exitsearch" / "pyproject.toml").is_file()  # file_mounts synced the checkout
        assert not (node["home"] / "exitsearch" / ".git").exists()  # rsync_exclude
        assert "export RAY_AUTH_MODE=token" in (node["home"] / ".bashrc").read_text()  # setup_commands ran
        assert (node["home"] / ".ray" / "auth_token").read_text() == token.read_text()

        job_id = f"rayup_{secrets.token_hex(3)}"
        t1 = time.monotonic()
        submit = _run(job_ray + ["submit", "--address", address, "--submission-id", job_id, "--",
                                 "python", "-m", "search.run", "--space", "gran_hbn", "--data", "synthetic",
                                 "--data-size", "tiny", "--budget", "smoke", "--trials", str(TRIALS),
                                 "--cpus-per-trial", "1", "--address", "auto", "--node-timeout", "60",
                                 "--storage", str(storage), "--name", "rayup", "--no-report"], 900, env=job_env)
        note(f"ray job submit --submission-id {job_id} (exit {submit.returncode}, {time.monotonic() - t1:.0f} s)",
             _tail(submit.stdout + submit.stderr, 8))
        assert submit.returncode == 0, submit.stdout[-6000:] + submit.stderr[-3000:]
        status = _run(job_ray + ["status", "--address", address, job_id], 120, env=job_env)
        note(f"ray job status {job_id}", _tail(status.stdout + status.stderr, 2))
        assert status.returncode == 0 and f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
        # the same through the SDK: its JobStatus value
        sdk = _run([str(node["venv"] / "bin" / "python"), "-c",
                    "import sys; from ray.job_submission import JobSubmissionClient as C; "
                    "print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)", address, job_id], 120, env=job_env)
        note("JobSubmissionClient.get_job_status", sdk.stdout.strip() or sdk.stderr[-2000:])
        assert sdk.stdout.strip() == "SUCCEEDED", sdk.stdout + sdk.stderr
        logs = _run(job_ray + ["logs", "--address", address, job_id], 120, env=job_env).stdout
        # the job's `python` is the node's, with the project installed from the synced copy
        # (pip install -e ~/exitsearch), not this interpreter's own install of it
        where = _run([str(node["venv"] / "bin" / "python"), "-c",
                      "import importlib.util as u; print(u.find_spec('search').origin)"], 60,
                     env={**{k: v for k, v in env.items() if k != "PYTHONPATH"}, "HOME": str(node["home"])}, cwd="/")
        note("the node's `search` package", where.stdout.strip())
        assert where.stdout.strip().startswith(str(node["home"] / "exitsearch")), where.stdout + where.stderr

        import pyarrow.parquet as pq

        results = storage / "rayup" / "results.parquet"
        assert results.is_file(), sorted(str(p) for p in storage.rglob("*"))[:50]
        rows = pq.read_table(results).to_pylist()
        per_trial = {r["trial_id"]: r["status"] for r in rows}
        note("results.parquet", f"{len(rows)} rows, {len(per_trial)} trials, statuses {sorted(set(per_trial.values()))}")
        assert len(per_trial) == TRIALS, per_trial
        assert set(per_trial.values()) == {"complete"}, per_trial
        assert "Traceback" not in logs, _tail(logs, 40)
    finally:
        t2 = time.monotonic()
        down = _run([ray, "down", "-y", str(yaml_path)], 300, cwd=ROOT, env=env)
        left = _ray_processes_in(node["ns"])
        note(f"ray down (exit {down.returncode}, {time.monotonic() - t2:.0f} s)", _tail(down.stdout + down.stderr, 6))
        note("Ray processes left in the node after ray down", "\n".join(left) or "none")
        shutil.rmtree(_ssh_control_dir(name), ignore_errors=True)
        try:
            _ssh_control_dir(name).parent.rmdir()  # only if no other cluster uses it
        except OSError:
            pass
        note(f"wall time {time.monotonic() - note.t0:.0f} s")
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert left == [], left
    status = _run(job_ray + ["status", "--address", address, job_id], 60, env=job_env)
    assert status.returncode != 0  # the job API is gone with the cluster
