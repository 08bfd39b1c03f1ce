"""The byte-rewriting modules (`formats.cfb`, `formats.msi_rewrite`) checked on real MSIs that
wixl makes here, with independent readers as the oracle: olefile (compound file streams and
summary information), msitools' msiinfo and msiextract (tables, files), gcab (cabinet times).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import olefile
import pytest

from builder.formats import msi_rewrite
from builder.formats.cfb import CfbError, CompoundFile
from tests.helpers import ROOT

EPOCH = 1700000000


def make_msi(directory: Path, name: str) -> Path:
    """A small MSI from wixl (random ProductCode/PackageCode, times of now), two files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "a.txt").write_text("hello\n")
    (directory / "b.dll").write_bytes(b"MZ" + bytes(300))
    shutil.copy(ROOT / "tests" / "data" / "tiny.wxs", directory / "tiny.wxs")
    subprocess.run(
        ["wixl", "-a", "x64", "-o", name, "tiny.wxs"],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    return directory / name


def product_code(msi: Path) -> str:
    table = subprocess.run(
        ["msiinfo", "export", str(msi), "Property"], check=True, capture_output=True, text=True
    ).stdout
    rows = dict(line.split("\t", 1) for line in table.splitlines()[3:] if "\t" in line)
    return rows["ProductCode"]


def cabinet_times(msi: Path, scratch: Path) -> list[str]:
    ole = olefile.OleFileIO(str(msi))
    cabinets = [s for s in ole.listdir() if ole.openstream(s).read(4) == b"MSCF"]
    assert len(cabinets) == 1
    cab = scratch / "x.cab"
    cab.write_bytes(ole.openstream(cabinets[0]).read())
    ole.close()
    listing = subprocess.run(["gcab", "-lv", str(cab)], check=True, capture_output=True, text=True)
    return [" ".join(line.split()[2:4]) for line in listing.stdout.splitlines() if line.strip()]


@pytest.fixture
def msi(tmp_path: Path) -> Path:
    return make_msi(tmp_path / "one", "tiny.msi")


def test_cfb_reads_every_stream_as_olefile_does(msi: Path) -> None:
    cfb = CompoundFile(bytearray(msi.read_bytes()))
    ole = olefile.OleFileIO(str(msi))
    ours = {entry.name: cfb.read(entry) for entry in cfb.streams()}
    theirs = {"/".join(path): ole.openstream(path).read() for path in ole.listdir()}
    assert len(ours) == len(theirs) >= 5
    assert sorted(ours.values()) == sorted(theirs.values())


def test_cfb_writes_in_place_what_olefile_then_reads(msi: Path) -> None:
    cfb = CompoundFile(bytearray(msi.read_bytes()))
    for entry in cfb.streams():  # both mini-stream and regular-sector streams
        cfb.write(entry, bytes(reversed(cfb.read(entry))))
    msi.write_bytes(bytes(cfb.data))
    ole = olefile.OleFileIO(str(msi))
    cfb_again = CompoundFile(bytearray(msi.read_bytes()))
    for entry in cfb_again.streams():
        assert cfb_again.read(entry) in {ole.openstream(p).read() for p in ole.listdir()}
    with pytest.raises(CfbError, match="size would change"):
        cfb.write(cfb.streams()[0], b"longer" + cfb.read(cfb.streams()[0]))


def test_rewrite_sets_codes_and_times_as_the_readers_see_them(msi: Path, tmp_path: Path) -> None:
    codes = msi_rewrite.derive_codes("recipe", "10.0.13", "inputs")
    before = product_code(msi)
    assert before != codes.product
    files_before = subprocess.run(["msiextract", "-C", str(tmp_path / "x1"), str(msi)], check=True)
    msi_rewrite.make_reproducible(msi, codes, before, EPOCH)
    assert product_code(msi) == codes.product
    meta = olefile.OleFileIO(str(msi)).get_metadata()
    assert meta.revision_number.decode() == codes.package
    moment = datetime.fromtimestamp(EPOCH, UTC).replace(tzinfo=None)
    assert meta.create_time == meta.last_saved_time == moment
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S")
    assert cabinet_times(msi, tmp_path) == [stamp, stamp]
    subprocess.run(["msiextract", "-C", str(tmp_path / "x2"), str(msi)], check=True)
    assert files_before.returncode == 0
    for name in ("a.txt", "b.dll"):
        first = next((tmp_path / "x1").rglob(name)).read_bytes()
        assert next((tmp_path / "x2").rglob(name)).read_bytes() == first


def test_two_wixl_runs_become_bit_identical(tmp_path: Path) -> None:
    first = make_msi(tmp_path / "a", "first.msi")
    time.sleep(1.1)  # another second in the summary times; other random codes
    second = make_msi(tmp_path / "b", "second.msi")
    assert first.read_bytes() != second.read_bytes()
    codes = msi_rewrite.derive_codes("recipe", "1.0.0", "inputs")
    for path in (first, second):
        msi_rewrite.make_reproducible(path, codes, product_code(path), EPOCH)
    assert first.read_bytes() == second.read_bytes()


def test_a_product_code_not_in_the_string_pool_is_refused(msi: Path) -> None:
    codes = msi_rewrite.derive_codes("recipe", "1.0.0", "inputs")
    with pytest.raises(msi_rewrite.ArtifactError, match="not in the string pool exactly once"):
        msi_rewrite.make_reproducible(msi, codes, "{00000000-0000-0000-0000-000000000000}", EPOCH)


def test_not_a_compound_file(tmp_path: Path) -> None:
    with pytest.raises(CfbError, match="bad signature"):
        CompoundFile(bytearray(b"MZ" + bytes(600)))
