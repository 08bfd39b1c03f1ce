"""SBOMs: the link map read as GNU ld writes it, the document a run writes (valid by
spdx-tools, deterministic, naming the exact Debian versions dpkg gave and the image's package
list agrees with), a Windows MSI's DLLs traced to their pinned sources, and the release's
document referring to each recipe's by checksum. The real link map and dpkg answers come from
real builds in tests/integration/test_linux_build.py and test_windows.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from builder import pipeline
from builder.cli import main
from builder.formats.link_map import LinkMapError, parse_link_map
from builder.formats.sbom import SBOM_NAME
from builder.stages.sbom import LinkInventory, Owner, distro
from tests.fakes import FakeEngine
from tests.unit import test_pipeline
from tests.unit.test_release import make_output

setup = test_pipeline.setup

MAP = """Archive member included to satisfy reference by file (symbol)

/usr/lib/x86_64-linux-gnu/libm-2.41.a(s_sin.o)
                              /tmp/cc.o (sin)
/usr/lib/gcc/x86_64-linux-gnu/14/../../../x86_64-linux-gnu/libc.a(printf.o)
                              /tmp/cc.o (printf)
/usr/lib/x86_64-linux-gnu/libc.a(vfprintf.o)
                              /usr/lib/x86_64-linux-gnu/libc.a(printf.o) (vfprintf)
libqemuutil.a(osdep.c.o)
                              qga/main.c.o (qemu_open)

Discarded input sections
LOAD /usr/lib/x86_64-linux-gnu/crt1.o
LOAD qga/main.c.o
LOAD /usr/lib/x86_64-linux-gnu/libmvec.a
LOAD /usr/lib/x86_64-linux-gnu/libc.a
"""


def validate(path: Path) -> None:
    messages = validate_full_spdx_document(parse_file(str(path)))
    assert messages == [], [m.validation_message for m in messages]


def test_the_map_lists_what_the_link_took_not_what_it_searched() -> None:
    inputs = parse_link_map(MAP)
    assert inputs.archives == {
        "/usr/lib/x86_64-linux-gnu/libm-2.41.a": 1,
        "/usr/lib/x86_64-linux-gnu/libc.a": 2,  # one file, however the path was spelled
    }
    assert "/usr/lib/x86_64-linux-gnu/libmvec.a" not in inputs.archives  # searched, unused
    assert inputs.objects == ["/usr/lib/x86_64-linux-gnu/crt1.o"]  # the build's own are QEMU's


@pytest.mark.parametrize("text", ["", "hello\n", "LOAD /usr/lib/libc.a\n"])
def test_a_map_that_loads_no_object_is_refused(text: str) -> None:
    with pytest.raises(LinkMapError):
        parse_link_map(text)


def test_a_run_writes_a_valid_deterministic_sbom_of_what_it_linked(setup) -> None:
    plan, text, engine, cache = setup
    first = pipeline.run(plan, engine, cache, text, use_cache=False)
    path = first.output_dir / SBOM_NAME
    validate(path)
    data = path.read_bytes()
    document = json.loads(data)
    assert first.manifest["sbom"]["name"] == SBOM_NAME
    purls = {
        ref["referenceLocator"]
        for package in document["packages"]
        for ref in package.get("externalRefs", [])
    }
    # glib's exact version, as dpkg said it and as the manifest's package list has it.
    assert "pkg:deb/debian/glib2.0@2.84.4-3~deb13u2?arch=source&distro=debian-13" in purls
    assert "pkg:deb/debian/libglib2.0-dev@2.84.4-3~deb13u2?arch=amd64&distro=debian-13" in purls
    assert first.manifest["environment"]["packages"]["libglib2.0-dev"].startswith(
        "2.84.4-3~deb13u2"
    )
    assert document["creationInfo"]["created"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH
    assert "byte for byte" in document["comment"]  # the relink was the same link
    links = {(r["relationshipType"], r["relatedSpdxElement"]) for r in document["relationships"]}
    glib = "SPDXRef-Debian-libglib2.0-dev-qemu-ga-patched-static-STATIC-LINK"
    assert ("STATIC_LINK", glib) in links
    assert ("PATCH_APPLIED", "SPDXRef-Source-qemu") in links  # our patch, applied to QEMU
    patches = [p for p in document["packages"] if p["SPDXID"].startswith("SPDXRef-Patch-")]
    assert (
        len(patches) == 1
        and patches[0]["checksums"][0]["checksumValue"] == (first.manifest["patches"][0]["sha256"])
    )
    again_engine = FakeEngine()
    again_engine.run_id = "fakerun00007"
    again = pipeline.run(plan, again_engine, cache, text, use_cache=False)
    assert (again.output_dir / SBOM_NAME).read_bytes() == data  # another run, the same bytes


def test_a_library_no_package_owns_and_no_pin_made_stops_the_run(setup, monkeypatch) -> None:
    from builder.errors import ArtifactError
    from tests import fakes

    plan, text, engine, cache = setup
    monkeypatch.setattr(fakes, "_owner", lambda path: "")  # dpkg -S owns nothing
    with pytest.raises(ArtifactError, match="cannot say where"):
        pipeline.run(plan, engine, cache, text, use_cache=False)
    assert not plan.output_dir.exists()


def test_windows_dlls_are_traced_to_the_sources_the_dockerfile_pins() -> None:
    from builder.config.dockerfile_pins import read_pins
    from builder.stages.sbom import _pin_of

    pins = {pin.name: pin for pin in read_pins(Path("Dockerfile.mingw").read_text(), "")}
    expected = {
        "libglib-2.0-0.dll": "glib2.0",
        "libgio-2.0-0.dll": "glib2.0",
        "iconv.dll": "glib2.0",
        "gspawn-win64-helper.exe": "glib2.0",
        "libpcre2-8-0.dll": "pcre2",
        "libffi-8.dll": "libffi",
        "libintl-8.dll": "gettext",
        "libglib-2.0.dll.a": "glib2.0",
    }
    for name, source in expected.items():
        pin = _pin_of(name, pins)
        assert pin is not None and pin.package == source, name
    assert _pin_of("libgcc_s_seh-1.dll", pins) is None  # Debian's: dpkg owns it


def test_distro_of_the_build_image() -> None:
    assert distro("Debian GNU/Linux 13 (trixie)") == "debian-13"
    assert distro("Debian GNU/Linux 11 (bullseye)") == "debian-11"


def test_a_release_refers_to_each_recipes_sbom(setup, tmp_path: Path, capsys) -> None:
    plan, text, engine, cache = setup
    run = pipeline.run(plan, engine, cache, text).output_dir
    other = make_output(tmp_path / "out" / "b", "linux-b", {"qemu-ga-b": b"\x7fELF b"})
    target = tmp_path / "release"
    assert main(["release", str(run), str(other), "--output", str(target)]) == 0, (
        capsys.readouterr().err
    )
    validate(target / SBOM_NAME)
    document = json.loads((target / SBOM_NAME).read_text())
    (ref,) = document["externalDocumentRefs"]  # the hand-made input has no SBOM
    kept = target / "manifests" / "fake.spdx.json"
    assert kept.read_bytes() == (run / SBOM_NAME).read_bytes()
    assert ref["spdxDocument"] == json.loads(kept.read_text())["documentNamespace"]
    import hashlib

    assert ref["checksum"]["checksumValue"] == hashlib.sha1(kept.read_bytes()).hexdigest()
    assert main(["verify", str(target)]) == 0
    # An input whose SBOM was changed after the run is refused.
    (run / SBOM_NAME).write_text((run / SBOM_NAME).read_text().replace("glib2.0", "glib3.0"))
    assert main(["release", str(run), "--output", str(tmp_path / "r2")]) == 3
    assert "sbom.spdx.json is not the one manifest.json records" in capsys.readouterr().err


def test_inventory_records_are_what_publish_reads() -> None:
    owner = Owner("libc6-dev", "2.41-12", "amd64", "glibc", "2.41-12")
    inventory = LinkInventory("qemu-ga", True, {"/usr/lib/x86_64-linux-gnu/libc.a": owner})
    assert inventory.static["/usr/lib/x86_64-linux-gnu/libc.a"].source == "glibc"


def test_one_package_linked_two_ways_gets_two_elements(tmp_path: Path) -> None:
    """A mingw package supplies static archives and an import library: two relationships, two
    SPDX ids (ids must be unique, as the validator checks)."""
    from builder.formats import sbom

    inputs = sbom.SbomInputs(
        recipe="windows-msi", version="10.0.13+qga1", tool_version="0", source_date_epoch=0,
        distro="debian-13", source={"kind": "debian", "version": "1:10.0.13", "sha256": "a" * 64},
        patches=[], built=[sbom.Built("qemu-ga.exe", "b" * 64)],
    )  # fmt: skip
    for how, files in (("STATIC_LINK", ("libmingwex.a",)), ("DYNAMIC_LINK", ("libpthread.dll.a",))):
        inputs.debian.append(
            sbom.DebianLibrary(
                "mingw-w64",
                "12.0.0-5",
                "mingw-w64-x86-64-dev",
                "12.0.0-5",
                "all",
                files,
                "qemu-ga.exe",
                how,
            )
        )
    path = tmp_path / SBOM_NAME
    path.write_bytes(sbom.encode(sbom.document(inputs)))
    validate(path)
