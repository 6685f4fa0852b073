"""The lab on a user's host: it removes only what carries its marker, refuses inventory values that
would reach a command line as options or commands, writes its records whole, and recovers from a
killed engine (a stale lock, plugins that end with their engine). No libvirtd, no engine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import healthcheck
from hypervisor import cleanup, libvirt, recovery
from lab.inventory import read_hosts, uri_problem
from lab.spec import HostSpec
from runtime import hostfacts
from runtime.hostshell import HostRef, access_problems, ref_of
from virt import ownership
from virt.ownership import Marker

OURS = "file:///work/main/.state/backend"
TESTS = "file:///work/main/.state/test-runs"
DOMAIN = "<domain type='qemu'>\n  <name>l2dsr-lab-web01</name>\n  <memory unit='MiB'>512</memory>\n</domain>\n"


# ---- ownership ---------------------------------------------------------------------------------------


def test_the_marker_goes_into_the_xml_and_reads_back():
    marker = Marker("l2dsr/lab/0123abcd", OURS)
    xml = ownership.with_marker(ownership.with_uuid(DOMAIN, "9b0c7e2e-0000-4000-8000-000000000001"), marker)
    assert ownership.marker_of(xml) == marker and marker.stack == "lab"
    assert xml.index("<uuid>") < xml.index("<metadata>") < xml.index("<memory")
    assert ownership.marker_of(DOMAIN) is None  # the user's domain: no marker
    assert ownership.marker_of("not xml <") is None
    quoted = Marker('l2dsr/a"b/1', "file:///x&y")  # an odd state path stays one attribute
    assert ownership.marker_of(ownership.with_marker(DOMAIN, quoted)) == quoted


def test_a_clean_up_removes_only_its_own_whatever_force_says():
    objects = {
        "l2dsr-lab-web01": Marker("l2dsr/lab/1", OURS),  # this checkout's lab stack
        "l2dsr-e2e-lb": Marker("l2dsr/e2e/2", f"{TESTS}/test_up0/backend"),  # the test run's
        "l2dsr-lab-lb": Marker("l2dsr/lab/3", "file:///home/other/l2dsr/.state/backend"),  # another checkout's
        "mine": None,  # the user's own
    }
    down = ownership.sort_for_cleanup(objects, ownership.of_state(OURS))
    assert down.remove == ["l2dsr-lab-web01"]
    assert len(down.left) == 3 and any("mine (no l2dsr marker" in x for x in down.left)
    assert any("l2dsr-lab-lb (stack lab of another state: file:///home/other" in x for x in down.left)
    tests = ownership.sort_for_cleanup(objects, ownership.of_state(TESTS))
    assert tests.remove == ["l2dsr-e2e-lb"]  # not the user's lab stack, which the test run did not make
    assert ownership.sort_for_cleanup(objects, ownership.of_state()).remove == []  # no state: nothing
    # a state that only starts like ours is not under it
    assert not ownership.of_state(TESTS)(Marker("l2dsr/x/1", TESTS + "-other/backend"))


def test_an_object_whose_state_is_gone_is_said_so_and_removed_only_when_asked():
    """A CI run killed before its clean-up, or a checkout removed: its objects name a state that is no
    longer on this machine. A clean-up lists them with the command that removes them; --orphans does."""
    here = {OURS.removeprefix("file://"), "/home/other/l2dsr/.state/backend"}
    objects = {
        "l2dsr-e2e-lb": Marker("l2dsr/e2e/2", "file:///check/work/main/.state/test-runs/t0"),  # gone
        "l2dsr-lab-lb": Marker("l2dsr/lab/3", "file:///home/other/l2dsr/.state/backend"),  # another checkout's
        "l2dsr-s3-lb": Marker("l2dsr/s3/4", "s3://bucket/state"),  # not local: never an orphan
        "mine": None,
    }

    def gone(m):
        return ownership.state_gone(m, exists=here.__contains__)

    down = ownership.sort_for_cleanup(objects, ownership.of_state(OURS), gone)
    assert down.remove == []
    orphan = next(x for x in down.left if x.startswith("l2dsr-e2e-lb"))
    assert "no longer exists here: file:///check/work/main" in orphan and "down --force --orphans" in orphan
    assert all("no longer exists" not in x for x in down.left if not x.startswith("l2dsr-e2e-lb"))
    orphans = ownership.sort_for_cleanup(objects, ownership.of_state_or_orphan(OURS, exists=here.__contains__), gone)
    assert orphans.remove == ["l2dsr-e2e-lb"]  # never another checkout's, a remote state's, or the user's


def test_the_volumes_removed_are_the_removed_domains_and_their_stacks_never_a_kept_domains():
    web = "<domain><disk><source file='/var/lib/libvirt/images/l2dsr-lab-web01-disk-aa.qcow2'/></disk></domain>"
    user = "<domain><disk><source file='/var/lib/libvirt/images/user.qcow2'/></disk></domain>"
    objects = cleanup.HostObjects(
        domains={"l2dsr-lab-web01": Marker("l2dsr/lab/1", OURS), "user": None},
        xml={"l2dsr-lab-web01": web, "user": user},
    )
    pool = {
        name: f"/var/lib/libvirt/images/{name}"
        for name in ("l2dsr-lab-web01-disk-aa.qcow2", "l2dsr-lab-base-1-bb.qcow2", "user.qcow2", "other.iso")
    }
    assert cleanup.volumes_of(objects, ["l2dsr-lab-web01"], pool) == [
        "l2dsr-lab-base-1-bb.qcow2",
        "l2dsr-lab-web01-disk-aa.qcow2",
    ]
    # another checkout's stack of the same name stays: the images of that name may be its
    objects.domains["l2dsr-lab-lb"] = Marker("l2dsr/lab/9", "file:///elsewhere")
    objects.xml["l2dsr-lab-lb"] = "<domain/>"
    assert cleanup.volumes_of(objects, ["l2dsr-lab-web01"], pool) == ["l2dsr-lab-web01-disk-aa.qcow2"]


def test_a_clean_up_forgets_the_journal_entries_of_the_volumes_it_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("L2DSR_CACHE", str(tmp_path))
    journal = tmp_path / "in-flight"
    journal.mkdir()
    for stem, name in (
        ("l2dsr-lab-web01-disk", "l2dsr-lab-web01-disk-aa.qcow2"),
        ("l2dsr-x-lb", "l2dsr-x-lb-bb.qcow2"),
    ):
        (journal / f"{stem}-k.json").write_text(json.dumps({"uri": "qemu:///system", "pool": "default", "name": name}))
    (journal / "torn.json").write_text('{"uri": ')
    cleanup.forget_in_flight({"l2dsr-lab-web01-disk-aa.qcow2"})
    assert sorted(p.name for p in journal.iterdir()) == ["l2dsr-x-lb-k.json", "torn.json"]


def test_the_sandbox_keeps_libvirt_private_and_touches_no_host_file(tmp_path, monkeypatch):
    launcher = libvirt.private_libvirt_launcher("/var/lib/l2dsr/sandbox", resolv="/var/lib/l2dsr/sandbox/resolv.conf")
    for key, path in libvirt.PRIVATE_DIRS.items():
        assert f"mount --bind /var/lib/l2dsr/sandbox/{key} {path}\n" in launcher
    assert launcher.index("mount --bind") < launcher.index("virtlogd") < launcher.index("libvirtd --daemon")
    assert "/etc/netns" not in launcher
    # the QEMU settings go into the private qemu.conf, which starts as a copy of the host's
    private = tmp_path / "sandbox"
    libvirt.prepare_private_dirs(private)
    text = (private / "etc" / "qemu.conf").read_text()
    assert 'security_driver = "none"' in text and text.count("# l2dsr sandbox") == 1
    libvirt.prepare_private_dirs(private)  # idempotent
    assert (private / "etc" / "qemu.conf").read_text().count("# l2dsr sandbox") == 1
    assert not list((private / "etc").glob("qemu/*.xml"))  # none of the host's definitions


def test_a_sandbox_whose_daemon_is_gone_keeps_what_its_directory_defines(tmp_path, monkeypatch):
    """down with the private libvirtd dead (crashed): nothing can be read by marker, so nothing of its
    directory is deleted while it defines a domain, a network or a volume."""
    directory = tmp_path / "sandbox"
    (directory / "etc" / "qemu" / "networks").mkdir(parents=True)
    (directory / "etc" / "qemu" / "users-vm.xml").write_text(DOMAIN)
    record = tmp_path / "host.json"
    monkeypatch.setattr(hostfacts, "RECORD", record)
    hostfacts.write_record(hostfacts.HostRecord("sandbox", "", {"libvirtd": dead_pid()}, directory=str(directory)))
    cleanup.teardown(force=True, states=(OURS,), record=record)
    assert (directory / "etc" / "qemu" / "users-vm.xml").exists() and not record.exists()
    assert cleanup.defined_in(directory) == ["users-vm.xml"]
    (directory / "etc" / "qemu" / "users-vm.xml").unlink()
    hostfacts.write_record(hostfacts.HostRecord("sandbox", "", {"libvirtd": dead_pid()}, directory=str(directory)))
    cleanup.teardown(force=True, states=(OURS,), record=record)
    assert not directory.exists()  # nothing defined: the lab's directory goes


def test_the_lab_prefix_enters_both_of_the_sandbox_namespaces():
    me = os.getpid()
    rec = hostfacts.HostRecord("sandbox", "l2dsr", {"libvirtd": me}, directory="/var/lib/l2dsr/sandbox")
    assert libvirt.in_namespace(rec) == [
        "nsenter",
        "--net=/run/netns/l2dsr",
        f"--mount=/proc/{me}/ns/mnt",
        "--wd=.",
        "--",
    ]
    assert libvirt.in_namespace(hostfacts.HostRecord("system")) == []


# ---- inventory values that would reach a command line ------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({"user": "-oProxyCommand=touch /tmp/x"}, "user '-oProxyCommand=touch /tmp/x' is not a POSIX user name"),
        ({"uri": "qemu+ext:///system?command=/bin/sh"}, "transport 'qemu+ext' is not one the lab supports"),
        ({"uri": "qemu+ssh://-oProxyCommand=x/system"}, "is not a host name"),
        ({"uri": "qemu+ssh://root@h2/system?command=x"}, "parameter(s) command not supported"),
        ({"uri": "qemu+tcp://h2/system"}, "transport 'qemu+tcp' is not one the lab supports"),
        ({"address": "h2.example"}, "address 'h2.example' is not an IPv4 address"),
    ],
)
def test_inventory_values_that_could_run_a_command_are_refused(entry, said):
    h2 = {"name": "h2", "uri": "qemu+ssh://root@10.254.0.2/system", "address": "10.254.0.2", "user": "root", **entry}
    _, problems = read_hosts([{"name": "h1", "uri": "qemu:///system", "address": "10.254.0.1"}, h2], "", False)
    assert any(said in p.text and p.key == "hosts" for p in problems), problems


def test_a_single_hosts_address_must_be_ipv4_too_and_the_supported_uris_pass():
    _, problems = read_hosts([{"name": "h1", "uri": "qemu:///system", "address": "not-an-address"}], "", False)
    assert [p.key for p in problems] == ["hosts"] and "not an IPv4 address" in problems[0].text
    for uri in ("qemu:///system", "qemu:///session", "qemu+ssh://root@10.0.0.2/system?keyfile=/k&no_verify=1"):
        assert uri_problem(uri) == "", uri
    assert "names no host" in uri_problem("qemu://h2/system")


def test_an_identity_file_that_cannot_be_read_is_refused(tmp_path):
    key = tmp_path / "id"
    host = HostSpec("h2", "qemu+ssh://root@10.254.0.2/system", "10.254.0.2", "root", str(key))
    assert "identityFile" in access_problems((host,))[0].text
    key.write_text("k")
    assert access_problems((host,)) == []


def test_a_real_hosts_key_is_checked_a_simulated_ones_is_not():
    real = ref_of(HostSpec("h2", "qemu+ssh://root@192.0.2.7/system", "192.0.2.7", "root"))
    options = " ".join(real.ssh_options())
    assert "StrictHostKeyChecking=accept-new" in options and "UserKnownHostsFile=/dev/null" not in options
    assert f"UserKnownHostsFile={hostfacts.cache_dir() / 'known_hosts'}" in options
    simulated = ref_of(HostSpec("h2", "qemu+ssh://root@10.254.0.2/system?no_verify=1", "10.254.0.2", "root"))
    assert "StrictHostKeyChecking=no" in " ".join(simulated.ssh_options())
    assert HostRef("x").verify_key  # checked unless said otherwise


# ---- records written whole ---------------------------------------------------------------------------


def test_a_record_is_written_whole_and_a_cut_short_one_is_one_readable_error(tmp_path, monkeypatch):
    path = tmp_path / "host.json"
    monkeypatch.setattr(hostfacts, "RECORD", path)
    hostfacts.write_record(hostfacts.HostRecord("sandbox", "l2dsr", {"libvirtd": 1}))
    assert hostfacts.read_record() == hostfacts.HostRecord("sandbox", "l2dsr", {"libvirtd": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["host.json"]  # no temporary file left beside it
    path.write_text('{"libvirtd": "sandbox", "namesp')  # what a crash in place would have left
    with pytest.raises(hostfacts.RecordUnreadable, match=r"host.json \(what ./labctl setup started\) cannot be read"):
        hostfacts.read_record()


def test_a_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    hostfacts.atomic_write(path, '{"old": 1}')

    def broken(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        hostfacts.atomic_write(path, '{"new": 2}')
    assert json.loads(path.read_text()) == {"old": 1} and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_report_skips_a_cut_short_result_saying_so(tmp_path, capsys):
    from bench import report

    (tmp_path / "lab" / "20261201-1").mkdir(parents=True)
    (tmp_path / "lab" / "20261201-1" / "result.json").write_text('{"mode": "dsr", "summ')
    (tmp_path / "lab" / "20261201-2").mkdir()
    whole = {"mode": "proxy", "summary": [], "tool": "ab"}
    (tmp_path / "lab" / "20261201-2" / "result.json").write_text(json.dumps(whole))
    assert report.load_results([tmp_path / "lab"]) == [{**whole, "stack": "lab"}]  # the readable run only
    assert "skipped" in capsys.readouterr().err
    with pytest.raises(report.ResultUnreadable, match="cannot be read"):
        report.load_results([tmp_path / "lab" / "20261201-1" / "result.json"])


# ---- recovery from a killed engine ---------------------------------------------------------------------


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_lock_of_a_process_gone_from_this_host_is_stale_and_only_that():
    me = socket.gethostname()
    assert recovery.is_stale({"pid": dead_pid(), "hostname": me}, me)
    assert not recovery.is_stale({"pid": os.getpid(), "hostname": me}, me)  # it runs
    assert not recovery.is_stale({"pid": dead_pid(), "hostname": "another-host"}, me)  # cannot tell from here
    assert not recovery.is_stale({"hostname": me}, me)


def test_the_stale_lock_is_removed_and_a_live_one_left(tmp_path):
    me = socket.gethostname()
    locks = tmp_path / ".pulumi" / "locks" / "organization" / "l2dsr" / "lab"
    locks.mkdir(parents=True)
    (locks / "a.json").write_text(json.dumps({"pid": dead_pid(), "hostname": me, "timestamp": "t"}))
    (locks / "b.json").write_text(json.dumps({"pid": os.getpid(), "hostname": me, "timestamp": "t"}))
    left = recovery.clear_stale_locks(tmp_path, "lab")
    assert not (locks / "a.json").exists() and (locks / "b.json").exists()
    assert left == [f"pid {os.getpid()} on {me} since t"]
    assert recovery.clear_stale_locks(tmp_path, "other") == []


def test_a_plugin_notices_its_engine_is_gone():
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"
    assert healthcheck.answers(address)
    server.close()
    assert not healthcheck.answers(address)
    calls = []
    healthcheck.engine_gone(lambda: calls.append(1) is not None, misses=3, period_s=0)  # never answers
    assert len(calls) == 3  # three misses in a row
    answers = iter([False, False, True, False, False, False])
    healthcheck.engine_gone(lambda: next(answers), misses=3, period_s=0)  # an answer starts the count anew


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_language_host_ends_when_its_engine_is_killed(tmp_path):
    """The real language host, started as the CLI starts it, against a stand-in engine that is killed:
    the engine held its stdout and stderr pipes (they break with it), as the CLI does."""
    engine = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,subprocess,sys,time; s=socket.create_server(('127.0.0.1',0)); "
            "host=subprocess.Popen([sys.executable,'-u','engine/langhost.py',f'127.0.0.1:{s.getsockname()[1]}'],"
            "stdout=subprocess.PIPE,stderr=subprocess.PIPE); print(host.pid, host.stdout.readline().decode().strip(), "
            "flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    host = 0
    try:
        host, port = (int(x) for x in engine.stdout.readline().split())  # it serves
        time.sleep(1.5)
        assert os.path.exists(f"/proc/{host}")  # and lives while its engine does
        engine.kill()
        engine.wait()
        deadline = time.monotonic() + 30
        while running(host):
            assert time.monotonic() < deadline, "the language host outlived its engine"
            time.sleep(0.2)
    finally:
        if engine.poll() is None:
            engine.kill()
        if host and os.path.exists(f"/proc/{host}"):
            os.kill(host, 9)


# ---- a system libvirtd: the lab's subnets against the host's own ---------------------------------------

IP_OUTPUT = """[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.168.16.7","prefixlen":24}]},
{"ifindex":3,"ifname":"l2dsr-0a1b2c3d","addr_info":[{"family":"inet","local":"172.16.0.1","prefixlen":24}]}]
@routes
[{"dst":"default","gateway":"192.168.16.1","dev":"eth0"},{"dst":"172.16.0.0/16","gateway":"192.168.16.254","dev":"eth0"},
{"dst":"10.9.9.9","dev":"tun0"}]
"""


def test_the_labs_subnets_are_refused_where_the_host_uses_them():
    from lab.addressing import host_network_clashes
    from lab.addressing import plan as address_plan
    from tests.conftest import lab_of, lab_stack_values
    from virt.hosts import parse_ip_json

    addresses, routes = parse_ip_json(IP_OUTPUT)
    assert addresses == (("eth0", "192.168.16.7/24"), ("l2dsr-0a1b2c3d", "172.16.0.1/24"))
    assert routes == (("eth0", "default"), ("eth0", "172.16.0.0/16"), ("tun0", "10.9.9.9/32"))
    spec, _ = lab_of(lab_stack_values())
    plan = address_plan(spec)
    found = host_network_clashes(plan, "h1", addresses, routes, frozenset({"l2dsr-0a1b2c3d"}))
    assert [p.key for p in found] == ["frontSubnet", "serverSubnet"]  # eth0's address; the route via eth0
    assert "192.168.16.0/24 overlaps the address 192.168.16.7/24 on host h1's eth0" in found[0].text
    assert "l2dsr:serverSubnet and l2dsr:firstWebAddress" in found[1].text
    # the lab's own bridge holding its own subnet is no clash, nor is a host that uses none of them
    assert (
        host_network_clashes(plan, "h1", (("l2dsr-0a1b2c3d", "172.16.0.1/24"),), (), frozenset({"l2dsr-0a1b2c3d"}))
        == []
    )
    assert host_network_clashes(plan, "h1", (("eth0", "192.0.2.2/24"),), (("eth0", "default"),), frozenset()) == []


def test_labctl_pulumi_makes_the_named_stacks_file_first():
    from hypervisor.__main__ import stacks_named

    assert stacks_named(["config", "set", "l2dsr:mode", "dsr", "--stack", "twohost"]) == ["twohost"]
    assert stacks_named(["up", "--stack=seed", "-s", "lab"]) == ["lab", "seed"]
    assert stacks_named(["config", "set", "l2dsr:webCount", "3"]) == ["lab"]  # the default stack's
