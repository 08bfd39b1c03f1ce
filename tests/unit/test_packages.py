"""Packages of the static agent: recipe fields checked at validate, the rendered unit, udev rule
and package sources, the release tarball, and the .deb/.rpm readers (on real and broken files)."""

from __future__ import annotations

import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from builder.commands.common import load_plan
from builder.config.overrides import Overrides
from builder.config.recipe import validate_recipe
from builder.errors import RecipeError
from builder.formats import package_sources, release_tarball
from builder.formats import service_files as sf
from builder.formats.packages import PackageFormatError, read_deb, read_rpm
from builder.stages.package import package_spec
from tests.helpers import DEFAULT_RECIPE, WINDOWS_RECIPE, absolutize, load_default

HOOK = "#!/bin/sh\n# QEMU's fsfreeze hook, as a test stands it in\nexit 0\n"
SPEC = package_sources.PackageSpec(
    name="qemu-ga-patched",
    version="10.0.13+qga1",
    revision="1",
    maintainer="qga-builder <qga-builder@example.org>",
    exec_path="/usr/sbin/qemu-ga-patched-static",
    qemu_version="10.0.13",
    source_date_epoch=1700000000,
    fsfreeze_hook=HOOK,
)


def _default_with(**changes: object) -> dict:
    data = absolutize(load_default())
    data.update(changes)
    return data


def _error(data: dict) -> str:
    with pytest.raises(RecipeError) as caught:
        validate_recipe(data, "r.yaml")
    return str(caught.value)


# --- recipe ---------------------------------------------------------------------------------


def test_default_recipe_asks_for_deb_rpm_and_tarball() -> None:
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    assert plan.package is not None
    assert plan.package.kinds == ("deb", "rpm", "tarball")
    assert plan.package.name == "qemu-ga-patched" and plan.package.version is None
    assert [a.kind for a in plan.artifacts] == ["static-elf"]  # packages are not built files
    assert "package" in plan.summary()


def test_recipes_without_packages_keep_their_cache_key_shape() -> None:
    plan, _ = load_plan(WINDOWS_RECIPE, Overrides())
    assert plan.package is None
    data = plan.summary()
    assert data["package"] is None  # recorded, but popped from the key's input (see cache_key)


@pytest.mark.parametrize(
    ("package", "field", "words"),
    [
        ({"name": "Qemu_GA"}, "package.name", "not a valid Debian/RPM package name"),
        ({"name": "q"}, "package.name", "2-63 characters"),
        ({"version": "10.0-1"}, "package.version", "no '-'"),
        ({"version": "1:10.0"}, "package.version", "not a valid Debian/RPM version"),
        ({"version": "v10"}, "package.version", "start with a digit"),
        ({"revision": "1 2"}, "package.revision", "not a valid Debian/RPM version"),
        ({"maintainer": "nobody"}, "package.maintainer", "Full Name <user@domain.tld>"),
        ({"colour": "blue"}, "package.colour", "unknown field"),
    ],
)
def test_bad_package_fields_are_refused_at_validate(package: dict, field: str, words: str) -> None:
    message = _error(_default_with(package=package))
    assert f"r.yaml: {field}" in message and words in message, message


def test_a_deb_from_the_windows_recipe_is_refused_at_validate() -> None:
    data = absolutize(yaml.safe_load(WINDOWS_RECIPE.read_text()))
    data["artifacts"].append({"kind": "deb"})
    message = _error(data)
    assert "deb artifacts package the static Linux agent" in message
    assert "target: linux and a static-elf artifact" in message


def test_packages_need_the_static_agent() -> None:
    data = _default_with(artifacts=[{"path": "qga/qemu-ga", "name": "x"}, {"kind": "rpm"}])
    assert "need target: linux and a static-elf artifact" in _error(data)


@pytest.mark.parametrize("entry", [{"kind": "deb", "path": "x"}, {"kind": "tarball", "name": "x"}])
def test_package_artifacts_take_no_path_or_name(entry: dict) -> None:
    data = _default_with()
    data["artifacts"].append(entry)
    assert "takes no path or name" in _error(data)


def test_a_package_kind_listed_twice_is_refused() -> None:
    data = _default_with()
    data["artifacts"].append({"kind": "deb"})
    assert "the deb artifact is listed twice" in _error(data)


def test_package_settings_without_a_package_artifact_are_refused() -> None:
    data = absolutize(load_default())
    data["artifacts"] = data["artifacts"][:1]
    data["package"] = {"name": "qga"}
    assert "package: settings need a deb, rpm or tarball artifact" in _error(data)


def test_a_version_made_from_an_odd_qemu_version_is_refused_clearly() -> None:
    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    assert package_spec(plan, "10.0.13", 1, HOOK).version == "10.0.13+qga1"
    with pytest.raises(
        RecipeError, match=r"package.version: made from the QEMU version '10.0-rc1'"
    ):
        package_spec(plan, "10.0-rc1", 1, HOOK)


# --- rendered files -------------------------------------------------------------------------


def test_the_unit_is_bound_to_the_agents_port() -> None:
    unit = sf.render(sf.SYSTEMD, "/usr/sbin/qga")
    device = r"dev-virtio\x2dports-org.qemu.guest_agent.0.device"
    assert f"BindsTo={device}" in unit and f"After={device}" in unit
    assert f"WantedBy={device}" in unit and "multi-user.target" not in unit
    assert "ExecStart=/usr/sbin/qga $DAEMON_ARGS" in unit
    assert "EnvironmentFile=-/etc/default/qemu-guest-agent" in unit


def test_the_udev_rule_wants_the_unit_when_the_port_appears() -> None:
    rule = sf.render(sf.UDEV_RULE, "/x")
    joined = rule.replace("\\\n", "")
    assert 'SUBSYSTEM=="virtio-ports", ATTR{name}=="org.qemu.guest_agent.0",' in joined
    assert 'TAG+="systemd", ENV{SYSTEMD_WANTS}="qemu-guest-agent.service"' in joined


def test_the_init_script_is_valid_sh_and_skips_guests_without_the_port(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(sf.render(sf.SYSVINIT, str(tmp_path / "agent")))
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    (tmp_path / "agent").write_text("#!/bin/sh\necho STARTED\n")
    (tmp_path / "agent").chmod(0o755)
    done = subprocess.run(["sh", str(script), "start"], capture_output=True, text=True)
    assert done.returncode == 0 and "no virtio port" in done.stdout
    assert "STARTED" not in done.stdout


def test_debian_tree_names_version_conflicts_and_scripts() -> None:
    tree = package_sources.debian_tree(SPEC)
    control = tree["debian/control"][0]
    assert "Package: qemu-ga-patched" in control
    for field in ("Conflicts", "Replaces", "Provides"):
        assert f"{field}: qemu-guest-agent" in control
    assert tree["debian/changelog"][0].startswith("qemu-ga-patched (10.0.13+qga1-1) ")
    assert "Tue, 14 Nov 2023 22:13:20 +0000" in tree["debian/changelog"][0]
    assert "--no-start" in tree["debian/rules"][0] and tree["debian/rules"][1] == 0o755
    assert tree["debian/qemu-ga-patched.install"][0] == (
        "qemu-ga-patched-static usr/sbin\nfsfreeze-hook etc/qemu\nqemu-ga.conf etc/qemu\n"
    )
    assert tree["debian/qemu-ga-patched.dirs"][0] == "etc/qemu/fsfreeze-hook.d\n"
    assert tree["fsfreeze-hook"] == (HOOK, 0o755)  # QEMU's own, from the source
    assert "fsfreeze-hook=/etc/qemu/fsfreeze-hook\n" in tree["qemu-ga.conf"][0]
    postinst = tree["debian/qemu-ga-patched.postinst"][0]
    assert "#DEBHELPER#" in postinst
    # An upgrade restarts the running agent (systemd) and sysvinit starts it at once.
    assert "deb-systemd-invoke try-restart qemu-guest-agent.service" in postinst
    assert "invoke-rc.d qemu-guest-agent restart" in postinst
    assert "deb-systemd-invoke stop" in tree["debian/qemu-ga-patched.prerm"][0]
    # Purge removes what the agent and the hook wrote.
    postrm = tree["debian/qemu-ga-patched.postrm"][0]
    assert "/var/run/qga.state /var/run/qemu-ga.pid /var/log/qga-fsfreeze-hook.log" in postrm
    for line in control.splitlines():
        assert len(line) <= 80, line  # lintian: extended-description-line-too-long


def test_rpm_spec_is_reproducible_and_installs_the_same_files() -> None:
    sources = package_sources.rpm_sources(SPEC)
    spec = sources["qemu-ga-patched.spec"][0]
    for line in (
        "Version: 10.0.13+qga1",
        "Release: 1",
        "Conflicts: qemu-guest-agent",
        "%global _buildhost qga-builder",
        "%global use_source_date_epoch_as_buildtime 1",
        "%config(noreplace) /etc/sysconfig/qemu-guest-agent",
        "%config(noreplace) /etc/qemu/qemu-ga.conf",
        "Group: System Environment/Daemons",
        "%dir /etc/qemu/fsfreeze-hook.d",
        "systemctl try-restart qemu-guest-agent.service",
    ):
        assert line in spec
    assert sources["fsfreeze-hook"] == (HOOK, 0o755)
    assert sources["unit"][0] == sf.render(sf.SYSTEMD, SPEC.exec_path)
    assert sources["init"][1] == 0o755


# --- release tarball ------------------------------------------------------------------------


def test_release_tarball_is_deterministic_and_complete(tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    release_tarball.write(first, SPEC, b"\x7fELF agent")
    release_tarball.write(second, SPEC, b"\x7fELF agent")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = {m.name: m for m in tar}
        stem = "qemu-ga-patched-10.0.13+qga1-linux-x86_64"
        for name in (
            "qemu-ga-patched-static",
            "qemu-guest-agent.service",
            "60-qemu-guest-agent.rules",
            "qemu-guest-agent.init",
            "qemu-guest-agent.conf",
            "qemu-guest-agent.default",
            "README",
            "SHA256SUMS",
        ):
            assert f"{stem}/{name}" in members, name
        assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 1700000000)}
        assert members[f"{stem}/qemu-ga-patched-static"].mode == 0o755
        sums = tar.extractfile(f"{stem}/SHA256SUMS").read().decode()  # type: ignore[union-attr]
    assert "qemu-ga-patched-static" in sums and "README" in sums
    release_tarball.write(second, SPEC, b"\x7fELF other agent")
    assert first.read_bytes() != second.read_bytes()


# --- .deb reader ----------------------------------------------------------------------------


def _dpkg_build(root: Path, out: Path) -> None:
    """dpkg-deb -b with xz, as the packager box (Debian) makes packages: Ubuntu's dpkg-deb
    would use zstd, which the reader does not take."""
    command = ["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(root), str(out)]
    subprocess.run(command, check=True, capture_output=True)


def _dpkg_deb(tmp_path: Path) -> Path:
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: demo\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: A <a@b.org>\n"
        "Description: demo\n long line\n"
    )
    (root / "DEBIAN" / "conffiles").write_text("/etc/default/demo\n")
    (root / "etc" / "default").mkdir(parents=True)
    (root / "etc" / "default" / "demo").write_text("X=1\n")
    out = tmp_path / "demo.deb"
    _dpkg_build(root, out)
    return out


def test_reads_a_real_deb(tmp_path: Path) -> None:
    deb = read_deb(_dpkg_deb(tmp_path))
    assert deb.control["Package"] == "demo" and deb.control["Version"] == "1.0-1"
    assert deb.control["Description"] == "demo\nlong line"
    assert deb.conffiles == ["/etc/default/demo"]
    assert deb.data["etc/default/demo"] == b"X=1\n"
    assert {(e.uid, e.gid) for e in deb.entries} == {(0, 0)}


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda b: b"not an archive", "no !<arch> magic"),
        (lambda b: b[: len(b) // 2], "runs past the end"),
        (lambda b: b[:8] + b[8:68].replace(b"`\n", b"xx") + b[68:], "broken ar member header"),
        (lambda b: b"!<arch>\n", "no debian-binary"),
    ],
)
def test_broken_debs_are_refused(tmp_path: Path, mangle, words: str) -> None:
    path = _dpkg_deb(tmp_path)
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(PackageFormatError, match=words):
        read_deb(path)


# --- .rpm reader ----------------------------------------------------------------------------


def _header(entries: list[tuple[int, int, bytes, int]]) -> bytes:
    index, store = b"", b""
    for tag, kind, data, count in entries:
        index += struct.pack(">IIII", tag, kind, len(store), count)
        store += data
    return (
        b"\x8e\xad\xe8\x01\0\0\0\0" + struct.pack(">II", len(entries), len(store)) + index + store
    )


def _rpm(tmp_path: Path, name: bytes = b"demo") -> Path:
    signature = _header([])
    header = _header(
        [
            (1000, 6, name + b"\0", 1),
            (1001, 6, b"1.0\0", 1),
            (1002, 6, b"1\0", 1),
            (1022, 6, b"x86_64\0", 1),
            (1118, 8, b"/etc/sysconfig/\0/usr/sbin/\0", 2),
            (1117, 8, b"demo\0agent\0", 2),
            (1116, 4, struct.pack(">II", 0, 1), 2),
            (1037, 4, struct.pack(">II", 1, 0), 2),
            (1039, 8, b"root\0root\0", 2),
        ]
    )
    lead = b"\xed\xab\xee\xdb" + b"\0" * 92
    path = tmp_path / "demo.rpm"
    path.write_bytes(lead + signature + b"\0" * (-len(signature) % 8) + header + b"payload")
    return path


def test_reads_an_rpm_header(tmp_path: Path) -> None:
    info = read_rpm(_rpm(tmp_path))
    assert info.tags["name"] == "demo" and info.tags["arch"] == "x86_64"
    assert info.files == ["/etc/sysconfig/demo", "/usr/sbin/agent"]
    assert info.config_files == ["/etc/sysconfig/demo"]


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda b: b"\0" * 200, "no lead magic"),
        (lambda b: b[:100], "header"),
        (lambda b: b[:96] + b"\0\0\0\0" + b[100:], "no header magic"),
        (lambda b: b[:104] + struct.pack(">I", 1 << 30) + b[108:], "beyond the file"),
    ],
)
def test_broken_rpms_are_refused(tmp_path: Path, mangle, words: str) -> None:
    path = _rpm(tmp_path)
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(PackageFormatError, match=words):
        read_rpm(path)


def test_deb_reader_refuses_a_huge_file(tmp_path: Path) -> None:
    path = _dpkg_deb(tmp_path)
    with pytest.raises(PackageFormatError, match="larger than"):
        read_deb(path, max_bytes=10)


def test_the_package_stage_runs_after_the_checks_and_before_the_vm_test() -> None:
    from builder import pipeline

    plan, _ = load_plan(DEFAULT_RECIPE, Overrides())
    names = pipeline.stage_names(plan)
    assert names.index("check") < names.index("package") < names.index("vm-test")
    windows, _ = load_plan(WINDOWS_RECIPE, Overrides())
    assert "package" not in pipeline.stage_names(windows)


def _agent_deb(tmp_path: Path, leave_out: str = "") -> Path:
    """A .deb laid out as the package stage expects, made by the host's dpkg-deb."""
    root = tmp_path / "agent-pkg"
    files = {
        SPEC.exec_path: (b"\x7fELF agent", 0o755),
        f"/usr/lib/systemd/system/{sf.SERVICE_NAME}.service": (SPEC.file(sf.SYSTEMD), 0o644),
        f"/usr/lib/udev/rules.d/{sf.UDEV_RULE_NAME}": (SPEC.file(sf.UDEV_RULE), 0o644),
        f"/etc/init.d/{sf.SERVICE_NAME}": (SPEC.file(sf.SYSVINIT), 0o755),
        f"/etc/default/{sf.SERVICE_NAME}": (SPEC.file(sf.DEFAULTS), 0o644),
        sf.CONF_FILE: (SPEC.file(sf.QGA_CONF), 0o644),
        sf.HOOK: (HOOK, 0o755),
    }
    for name, (data, mode) in files.items():
        if name == leave_out:
            continue
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        path.chmod(mode)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        "Package: qemu-ga-patched\nVersion: 10.0.13+qga1-1\nArchitecture: amd64\n"
        "Maintainer: A <a@example.org>\nConflicts: qemu-guest-agent\n"
        "Replaces: qemu-guest-agent\nDescription: agent\n"
    )
    (root / "DEBIAN" / "conffiles").write_text(
        f"/etc/default/{sf.SERVICE_NAME}\n/etc/init.d/{sf.SERVICE_NAME}\n"
        f"{sf.CONF_FILE}\n{sf.HOOK}\n"
    )
    out = tmp_path / SPEC.deb_file
    _dpkg_build(root, out)
    return out


def test_the_stage_accepts_a_deb_with_every_file(tmp_path: Path) -> None:
    from builder.stages.package import _check_deb

    _check_deb(_agent_deb(tmp_path), SPEC, b"\x7fELF agent")


def test_the_stage_refuses_a_deb_without_the_udev_rule_or_with_other_bytes(
    tmp_path: Path,
) -> None:
    from builder.errors import ArtifactError
    from builder.stages.package import _check_deb

    rule = f"/usr/lib/udev/rules.d/{sf.UDEV_RULE_NAME}"
    with pytest.raises(ArtifactError, match=f"{rule} is missing"):
        _check_deb(_agent_deb(tmp_path / "a", leave_out=rule), SPEC, b"\x7fELF agent")
    with pytest.raises(ArtifactError, match=f"{SPEC.exec_path} is missing or not what"):
        _check_deb(_agent_deb(tmp_path / "b"), SPEC, b"\x7fELF another agent")


def test_the_upstart_job_starts_the_agent_with_no_flag() -> None:
    """No upstart in Debian to run it: the job is checked as text. The agent runs in the
    foreground (no `expect fork`), with no argument (its paths are built in), respawned, and
    not at all on a guest without the port."""
    job = sf.render(sf.UPSTART, "/usr/sbin/qemu-ga-patched-static")
    stanzas = [line.split()[0] for line in job.splitlines() if line and not line[0].isspace()]
    known = {"#", "description", "author", "start", "stop", "respawn", "pre-start", "end", "exec"}
    assert set(stanzas) <= known, stanzas
    assert "exec /usr/sbin/qemu-ga-patched-static\n" in job
    assert "expect" not in job and "respawn" in stanzas
    pre_start = job[job.index("pre-start script") : job.index("end script")]
    assert f"[ -e {sf.PORT_PATH} ] || {{ stop; exit 0; }}" in pre_start


def test_the_init_script_uses_the_agents_own_pid_file() -> None:
    script = sf.render(sf.SYSVINIT, "/usr/sbin/qemu-ga-patched-static")
    assert f"PIDFILE={sf.PID_FILE}\n" in script
    assert '"$DAEMON" --daemonize $DAEMON_ARGS' in script  # no path flag: they are built in
