"""Security basics of the scale-out services: both servers listen on loopback only unless told otherwise, a host
that is not an address is refused before anything starts, stopping signals only processes that are still the ones
started (by PID and command line), and the package builds no shell command lines. (Manifest paths that leave the
data root are covered by tests/test_corpora_manifest.py::test_paths_escaping_the_root_are_skipped.)"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from scale_fixtures import _connect

import trustser
from trustser.cli import main
from trustser.services import ServiceError, Services, check_host

pytestmark = pytest.mark.scale


def listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(".".join(str(b) for b in raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(str(ipaddress.IPv6Address(words)))
    return found


def test_both_servers_listen_on_loopback_only_by_default(scale_services):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system to read listening sockets from")
    assert listening(scale_services["postgres"]["port"]) == {"127.0.0.1"}
    assert listening(scale_services["mlflow"]["port"]) == {"127.0.0.1"}
    with _connect(scale_services["storage"], "postgres") as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == ""  # TCP with a password only
        assert conn.execute("SHOW password_encryption").fetchone()[0] == "scram-sha-256"
    assert scale_services["tracking_uri"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("host", ["127.0.0.1'; DROP", "0.0.0.0 -c x=y", "$(reboot)", "a\nlisten_addresses='*'", ""])
def test_a_host_that_is_not_an_address_is_refused_before_anything_starts(host, tmp_path):
    with pytest.raises(ServiceError, match="--host"):
        check_host(host)
    out = CliRunner().invoke(main, ["services", "start", "--dir", str(tmp_path / "s"), "--host", host])
    assert out.exit_code == 2 and "--host must be" in out.output and not (tmp_path / "s").exists()


def test_the_start_command_binds_to_loopback_unless_told_otherwise():
    start = main.commands["services"].commands["start"]
    assert next(p for p in start.params if p.name == "host").default == "127.0.0.1"


def test_stop_leaves_alone_a_process_that_reuses_a_recorded_pid(tmp_path):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        for name in ("postgres", "mlflow"):
            (tmp_path / f"{name}.pid").write_text(f"{stranger.pid}\n")
        lines = Services(tmp_path).stop()
        assert stranger.poll() is None, "stop signalled a process that is not a server it started"
        assert all("was not running" in line for line in lines)
        assert not list(tmp_path.glob("*.pid"))
    finally:
        stranger.kill()
        stranger.wait()


def test_the_package_builds_no_shell_command_lines():
    shell = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.(getoutput|getstatusoutput)\(")
    offenders = [
        f"{path}:{n}"
        for path in Path(trustser.__file__).parent.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if shell.search(line)
    ]
    assert offenders == []
