"""The host's decisions (kvm or qemu, system or private libvirtd, image key) and the engine bootstrap."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lbmodes
from hypervisor import __main__ as hv
from hypervisor import image, libvirt, pulumi_cli
from hypervisor.paths import PROJECT_DIR
from resources.network import subnet_collisions
from runtime import hostfacts

RECIPE = hostfacts.Recipe.load()


def test_a_libvirtd_that_is_not_ours_is_the_system_one():
    assert libvirt.choose_libvirtd(system_libvirtd_answers=True, ours_running=False) == "system"
    assert libvirt.choose_libvirtd(system_libvirtd_answers=True, ours_running=True) == "sandbox"
    assert libvirt.choose_libvirtd(system_libvirtd_answers=False, ours_running=False) == "sandbox"


def test_domain_type_follows_the_probe_unless_configured():
    assert libvirt.choose_domain_type("auto", True) == "kvm"
    assert libvirt.choose_domain_type("auto", False) == "qemu"
    assert libvirt.choose_domain_type("qemu", True) == "qemu"
    assert libvirt.choose_domain_type("kvm", False) == "kvm"
    with pytest.raises(ValueError):
        libvirt.choose_domain_type("auto", None)


def test_kvm_probe_sees_a_kernel_run_under_software_emulation():
    # The probe boots the image's real kernel; under TCG it must print its banner (seconds).
    built = hostfacts.builtin_image()
    if not built.exists():
        pytest.fail("the base image is not built: run the tests through ./labctl test")
    assert libvirt.kvm_probe(built.kernel, accel="tcg", timeout=60) is True


def test_kvm_probe_is_false_without_dev_kvm(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *_: False)
    assert libvirt.kvm_probe(tmp_path / "no-kernel", accel="kvm") is False


def test_image_key_follows_every_input():
    base = hostfacts.Recipe.load()
    assert hostfacts.image_key(base) == hostfacts.image_key(hostfacts.Recipe.load())
    changed = [
        dataclasses.replace(base, packages=(*base.packages, "htop")),
        dataclasses.replace(base, suite="trixie"),
        dataclasses.replace(base, files={**base.files, "etc/hostname": "lab\n"}),
        dataclasses.replace(base, builder_version=base.builder_version + 1),
    ]
    keys = {hostfacts.image_key(r) for r in changed}
    assert len(keys) == 4 and hostfacts.image_key(base) not in keys


def test_no_role_service_starts_at_boot_of_the_built_tree(tmp_path):
    """What dpkg leaves in a rootfs (links to units that exist only inside it, SysV start links) is
    found on the tree, and the build's customisation leaves none of it."""
    root = tmp_path / "rootfs"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in ("nginx.service", "haproxy.service", "ssh.service"):
        (wants / unit).symlink_to(f"/lib/systemd/system/{unit}")  # dangling on this host, as after debootstrap
    rc2 = root / "etc/rc2.d"
    rc2.mkdir(parents=True)
    for name in ("S01nginx", "S01haproxy", "S01ipvsadm", "S01ssh"):
        (rc2 / name).symlink_to(f"../init.d/{name[3:]}")
    found = image.units_started_at_boot(root, RECIPE.role_units)
    assert "nginx.service is wanted by multi-user.target.wants" in found
    assert "ipvsadm.service has SysV start link /etc/rc2.d/S01ipvsadm" in found
    assert "haproxy.service is not masked in /etc/systemd/system" in found

    image._customise(root, hostfacts.Recipe.load(files={}))
    assert image.units_started_at_boot(root, RECIPE.role_units) == []
    assert (wants / "ssh.service").is_symlink() and (rc2 / "S01ssh").is_symlink()  # the OS's own stay
    masked = [root / "etc/systemd/system" / u for u in RECIPE.masked]
    masked += [root / "etc/systemd/system-generators" / g for g in RECIPE.masked_generators]
    assert [str(m.relative_to(root)) for m in masked if os.readlink(m) != "/dev/null"] == []


def test_the_image_has_every_roles_tool():
    for tool in ("nginx", "haproxy", "ipvsadm", "apache2-utils", "wrk", "cloud-init", "openssh-server", "iproute2"):
        assert tool in RECIPE.packages


# Which cloud-init module acts on each user-data key the lab writes (cloud-init 22.4's modules).
MODULE_OF_KEY = {
    "hostname": "set_hostname",
    "manage_etc_hosts": "update_etc_hosts",
    "locale": "locale",
    "users": "users-groups",
    "disable_root": "ssh",
    "ssh_genkeytypes": "ssh",
    "ssh_pwauth": None,  # set-passwords is not run: the image's sshd_config.d holds it
    "package_update": "package-update-upgrade-install",
    "package_upgrade": "package-update-upgrade-install",
    "packages": "package-update-upgrade-install",
    "write_files": "write-files",
    "runcmd": "runcmd",
    "final_message": "final-message",
}


def test_the_image_runs_a_cloud_init_module_for_every_key_the_lab_writes():
    import yaml

    from guest import render
    from lab.addressing import plan
    from tests.conftest import spec_of

    modules_cfg = yaml.safe_load(RECIPE.files["etc/cloud/cloud.cfg.d/91-l2dsr-modules.cfg"])
    modules = {m for stage in modules_cfg.values() for m in stage}
    assert "scripts-user" in modules  # runcmd only writes the script; scripts-user runs it
    keys = set()
    for mode in ("proxy", "dsr"):
        spec = spec_of({"mode": mode, "webCount": 1})
        for host in plan(spec).guests:
            keys |= set(
                yaml.safe_load(render.user_data(spec, lbmodes.MODES[spec.mode], plan(spec), host, "ssh-ed25519 AAAA k"))
            )
    assert keys <= set(MODULE_OF_KEY), f"a key without a known module: {keys - set(MODULE_OF_KEY)}"
    needed = {MODULE_OF_KEY[k] for k in keys} - {None}
    assert needed <= modules, f"user-data keys whose module the image does not run: {needed - modules}"
    assert "PasswordAuthentication no" in RECIPE.files["etc/ssh/sshd_config.d/50-l2dsr.conf"]
    # A stage whose service the image masks never runs: a module listed there would be silently skipped.
    # The init modules run in the local stage when the seed is local: `ds=nocloud` on the kernel's
    # command line is dsmode local (cloud-init's NoCloud), and the network stage then exits at once.
    local = "ds=nocloud" in hostfacts.kernel_cmdline().split()
    stage_service = {
        "cloud_init_modules": "cloud-init-local.service" if local else "cloud-init.service",
        "cloud_config_modules": "cloud-config.service",
        "cloud_final_modules": "cloud-final.service",
    }
    skipped = {stage: mods for stage, mods in modules_cfg.items() if mods and stage_service[stage] in RECIPE.masked}
    assert not skipped, f"modules in a stage the image masks: {skipped}"


def test_subnet_collision_names_the_other_network():
    other = "<network><name>l2dsr-dsr</name><ip address='192.168.16.1' prefix='24'/></network>"
    clashes = subnet_collisions(["192.168.16.1", "172.16.0.1"], {"l2dsr-dsr": other, "l2dsr-lab": other}, "l2dsr-lab")
    assert clashes == ["libvirt network l2dsr-dsr already holds 192.168.16.1"]


def test_cli_version_parsing():
    assert pulumi_cli.parse_version("v3.274.1\n") == (3, 274, 1)
    assert pulumi_cli.parse_version("") is None


def test_pulumi_bootstrap_is_idempotent():
    """After ./labctl setup, a second bootstrap finds everything and builds nothing."""
    assert pulumi_cli.ensure_pulumi() is False
    pulumi = pulumi_cli.bin_dir() / "pulumi"
    out = subprocess.run([str(pulumi), "version"], capture_output=True, text=True, env=pulumi_cli.pulumi_env())
    assert out.stdout.strip() == pulumi_cli.CLI_VERSION
    for launcher in pulumi_cli.LAUNCHERS:
        assert os.access(pulumi_cli.bin_dir() / launcher, os.X_OK)


def test_ssh_refuses_to_leave_the_lab_namespace():
    """From the host's own namespace the lab's private addresses lead off the machine: no SSH there."""
    rec = libvirt.read_record()
    if not (rec and rec.namespace):
        pytest.skip("the lab uses a system libvirtd here: no namespace to stay in")
    probe = "from runtime.ssh import Ssh; Ssh('lab', '/dev/null').argv('172.16.0.101', 'true'); print('built')"
    inside = subprocess.run(
        [str(pulumi_cli.venv_python()), "-c", probe],
        capture_output=True,
        text=True,
        cwd=pulumi_cli.paths.PROJECT_DIR,
        env=pulumi_cli.pulumi_env(),
    )
    outside = subprocess.run(
        ["unshare", "--net", str(pulumi_cli.venv_python()), "-c", probe],  # any namespace but the lab's
        capture_output=True,
        text=True,
        cwd=pulumi_cli.paths.PROJECT_DIR,
        env=pulumi_cli.pulumi_env(),
    )
    assert inside.stdout.strip() == "built", inside.stderr
    assert outside.returncode != 0 and "OutsideLabNamespace" in outside.stderr


def test_set_up_steps_run_at_once(tmp_path):
    """Two independent steps of 2 s each take about 2 s together, and each returns its result."""
    from hypervisor.progress import in_parallel, run_logged

    start = time.monotonic()
    done = in_parallel(
        {name: (lambda n=name: (run_logged(n, ["sleep", "2"], tmp_path / f"{n}.log"), n)[1]) for name in ("a", "b")}
    )
    assert done == {"a": "a", "b": "b"} and time.monotonic() - start < 3.5


def test_a_failing_set_up_step_stops_the_others_and_is_the_error(tmp_path):
    """The step that failed is reported (with its log), the other's process is ended at once, not waited for."""
    from hypervisor.progress import StepFailed, in_parallel, run_logged

    marker = tmp_path / "slow.pid"
    slow = ["sh", "-c", f"echo $$ > {marker}; exec sleep 60"]
    start = time.monotonic()
    with pytest.raises(StepFailed, match=r"^broken step failed \(exit 3\) .*broken\.log") as err:
        in_parallel(
            {
                "slow": lambda: run_logged("slow step", slow, tmp_path / "slow.log"),
                "broken": lambda: (
                    time.sleep(0.5),
                    run_logged("broken step", ["sh", "-c", "exit 3"], tmp_path / "broken.log"),
                ),
            }
        )
    assert time.monotonic() - start < 10, "the slow step was waited for"
    assert "slow" not in str(err.value)
    pid = int(marker.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


FAKE_GO = """#!/bin/sh
# A stand-in for the Go toolchain: `go build` either makes a CLI that prints its version, or hangs.
case "$1" in
  mod) touch go.mod ;;
  build) [ -n "$HANG" ] && { echo $$ > "$HANG"; exec sleep 60; }
         while [ "$1" != "-o" ]; do shift; done
         printf '#!/bin/sh\\necho v3.274.1\\n' > "$2"; chmod +x "$2" ;;
esac
"""


def _engine_started_by_labctl(tmp_path, monkeypatch, hang: str = ""):
    """What ./labctl starts beside the virtualenv: `python3 -m hypervisor.pulumi_cli` in its own
    process group, here with a stand-in `go`, an empty cache and no `pulumi` on PATH."""
    import subprocess
    import sys

    fake = tmp_path / "bin" / "go"
    fake.parent.mkdir()
    fake.write_text(FAKE_GO)
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "L2DSR_CACHE": str(tmp_path / "cache"), "HANG": hang}
    env["L2DSR_STATE"] = str(tmp_path / "state")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    proc = subprocess.Popen(
        # -S, as ./labctl runs it: the standard library only (a fresh machine's python3 has no PyYAML)
        [sys.executable, "-S", "-m", "hypervisor.pulumi_cli"],
        cwd=Path(__file__).parent.parent,
        start_new_session=True,
    )
    monkeypatch.setenv("L2DSR_ENGINE_PID", str(proc.pid))
    return proc


def test_the_set_up_follows_the_engine_build_labctl_started(tmp_path, monkeypatch):
    from hypervisor import pulumi_cli

    _engine_started_by_labctl(tmp_path, monkeypatch)
    assert pulumi_cli.ensure_pulumi_step() is False  # built by the process it followed, found here
    assert pulumi_cli.cached_cli().exists() and (tmp_path / "state" / "bin" / "pulumi").exists()
    assert "L2DSR_ENGINE_PID" not in os.environ


def test_an_engine_step_that_ended_before_the_set_up_began_is_not_an_error(tmp_path, monkeypatch):
    """With the CLI already built, the step ./labctl started ends at once and its shell collects it
    before the set-up can: the set-up then finds the CLI itself (CI's first run of this was a
    traceback, `No child processes`)."""
    from hypervisor import pulumi_cli

    proc = _engine_started_by_labctl(tmp_path, monkeypatch)
    proc.wait()  # collected by someone else, as ./labctl's shell does
    assert pulumi_cli.ensure_pulumi_step() is False
    assert pulumi_cli.cached_cli().exists()


def test_a_failing_host_step_ends_the_engine_build_labctl_started(tmp_path, monkeypatch):
    """The engine's build runs in a process ./labctl started (its go build in a session of its own):
    another step's failure ends both, and that failure is the error."""
    from hypervisor import pulumi_cli
    from hypervisor.progress import StepFailed, in_parallel, run_logged

    marker = tmp_path / "go-build.pid"
    proc = _engine_started_by_labctl(tmp_path, monkeypatch, hang=str(marker))
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    start = time.monotonic()
    with pytest.raises(StepFailed, match=r"^debootstrap failed \(exit 2\)"):
        in_parallel(
            {
                "pulumi": pulumi_cli.ensure_pulumi_step,
                "host": lambda: (
                    time.sleep(0.5),
                    run_logged("debootstrap", ["sh", "-c", "exit 2"], tmp_path / "d.log"),
                ),
            }
        )
    assert time.monotonic() - start < 10, "the engine's build was waited for"
    go_build = int(marker.read_text())
    assert not Path(f"/proc/{go_build}").exists() or "Z" in Path(f"/proc/{go_build}/stat").read_text().split()[2]
    assert proc.poll() is not None or not Path(f"/proc/{proc.pid}").exists()


def test_a_step_off_the_critical_path_runs_niced(tmp_path):
    """The image's steps yield the CPU to the Go build: what run_logged starts with nice=10 (and its
    children) runs at niceness 10 more than ours."""
    from hypervisor.progress import run_logged

    out = tmp_path / "nice"
    run_logged("niced", ["sh", "-c", f"sh -c 'nice' > {out}"], tmp_path / "n.log", nice=10)
    assert int(out.read_text()) == os.nice(0) + 10
    assert "$ nice -n 10 sh -c" in (tmp_path / "n.log").read_text()


def collected(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
    )
    return {line for line in done.stdout.splitlines() if "::" in line}


LAB_TESTS = ("tests/test_lab_", "tests/e2e/")  # where the tests that boot guests live


def test_the_test_commands_tiers_run_every_test_once_the_fast_ones_first():
    """`./labctl test` runs the fast tier, then the lab tier: together every test pytest runs by
    default, each once, and no test that boots a guest in the first."""
    fast, lab = (collected(*tier) for tier in hv.tiers([]))
    everything = collected()
    assert fast and lab and not fast & lab
    assert fast | lab == everything
    assert {t for t in lab if t.startswith(LAB_TESTS)} == lab
    assert not {t for t in fast if t.startswith(LAB_TESTS)}
    assert hv.tiers(["-k", "x"]) == [["-k", "x"]]
    # What does not fit CI's time is in neither tier, and each marker selects lab tests of its own.
    for marker in hv.ON_DEMAND:
        on_demand = collected("-m", marker)
        assert on_demand and not on_demand & everything, marker
        assert {t for t in on_demand if t.startswith(LAB_TESTS)} == on_demand, marker


def test_labctls_usage_and_its_commands_are_the_same_list():
    said = {line.split()[0] for line in hv.USAGE.splitlines()[1:] if line.startswith("  ") and line[2] != " "}
    assert said == set(hv.COMMANDS)


@pytest.mark.parametrize("argv", [["bogus"], ["hosts"], ["hosts", "up", "two"], ["ssh"]])
def test_a_command_labctl_does_not_have_is_its_usage_and_exit_2(argv, capsys):
    assert hv.main(argv) == 2
    assert "usage: ./labctl COMMAND" in capsys.readouterr().err
