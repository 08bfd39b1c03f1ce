"""What the configure cache's key sees of the patches: edits to C sources configure never reads
leave it alone, any change configure can read gives a new key."""

from __future__ import annotations

from typing import Any

from builder.caches.configure_cache import build_system_digest, configure_key, diff_sections

C_EDIT = b"""From 1 Mon Sep 17 00:00:00 2001
Subject: [PATCH] qga: stream output

Prose that changes between versions of the patch.
---
diff --git a/qga/commands.c b/qga/commands.c
index 1111111..2222222 100644
--- a/qga/commands.c
+++ b/qga/commands.c
@@ -1,3 +1,4 @@
+/* one */
 int a;
diff --git a/qga/guest-agent-core.h b/qga/guest-agent-core.h
--- a/qga/guest-agent-core.h
+++ b/qga/guest-agent-core.h
@@ -1 +1,2 @@
+#define X 1
"""


def _edited(patch: bytes, old: bytes, new: bytes) -> bytes:
    assert old in patch
    return patch.replace(old, new)


def test_sections_name_each_patched_file() -> None:
    sections = diff_sections(C_EDIT)
    assert [s.path for s in sections] == [None, "qga/commands.c", "qga/guest-agent-core.h"]
    plain = b"--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n--- a/meson.build\n+++ b/meson.build\n@@\n"
    assert [s.path for s in diff_sections(plain)] == ["x.c", "meson.build"]


def test_editing_c_sources_or_the_prose_keeps_the_digest() -> None:
    before = build_system_digest([C_EDIT])
    assert before == build_system_digest([])  # configure reads none of these files
    another_file = C_EDIT.replace(b"qga/commands.c", b"qga/main.c")  # a patch edit may add one
    assert build_system_digest([another_file]) == before
    assert build_system_digest([_edited(C_EDIT, b"/* one */", b"/* two */")]) == before
    assert build_system_digest([_edited(C_EDIT, b"#define X 1", b"#define X 2")]) == before
    assert build_system_digest([_edited(C_EDIT, b"Prose that", b"Words that")]) == before
    assert build_system_digest([_edited(C_EDIT, b"index 1111111", b"index 3333333")]) == before


def test_build_system_files_and_new_paths_change_the_digest() -> None:
    before = build_system_digest([C_EDIT])
    meson = (
        b"diff --git a/meson.build b/meson.build\n--- a/meson.build\n+++ b/meson.build\n@@\n+x\n"
    )
    assert build_system_digest([C_EDIT + meson]) != before
    other = meson.replace(b"+x", b"+y")
    assert build_system_digest([C_EDIT + meson]) != build_system_digest([C_EDIT + other])
    # configure's checks read the kernel headers QEMU carries
    kernel = C_EDIT.replace(b"qga/guest-agent-core.h", b"linux-headers/linux/kvm.h")
    assert build_system_digest([_edited(kernel, b"#define X 1", b"#define X 2")]) != (
        build_system_digest([kernel])
    )
    # configure links test programs under scripts/
    xen = C_EDIT.replace(b"qga/commands.c", b"scripts/xen-detect.c")
    assert build_system_digest([_edited(xen, b"/* one */", b"/* two */")]) != (
        build_system_digest([xen])
    )
    # a mode change (no hunks, no +++) counts whole
    mode = b"diff --git a/configure b/configure\nold mode 100644\nnew mode 100755\n"
    assert build_system_digest([C_EDIT + mode]) != before
    # a diff format we cannot read counts whole
    context_diff = b"*** a/x.c\n--- b/x.c\n***************\n*** 1 ****\n! a\n"
    assert build_system_digest([context_diff]) != build_system_digest([context_diff + b"! b\n"])


def test_the_key_covers_every_input() -> None:
    base: dict[str, Any] = {
        "image_id": "sha256:" + "a" * 64,
        "argv": ("/work/qemu/src/configure", "--static"),
        "environment": {"SOURCE_DATE_EPOCH": "1"},
        "umask": "0022",
        "source_sha256": "b" * 64,
        "strip_components": 1,
        "patches": [C_EDIT],
    }
    key = configure_key(**base)
    changes = {
        "image_id": "sha256:" + "c" * 64,
        "argv": ("/work/qemu/src/configure", "--static", "--enable-debug"),
        "environment": {"SOURCE_DATE_EPOCH": "2"},
        "umask": "0002",
        "source_sha256": "d" * 64,
        "strip_components": 0,
        "patches": [C_EDIT + b"--- a/meson.build\n+++ b/meson.build\n@@ -1 +1 @@\n-a\n+b\n"],
    }
    for field, value in changes.items():
        assert configure_key(**{**base, field: value}) != key, field
    edited = _edited(C_EDIT, b"/* one */", b"/* two */")
    assert configure_key(**{**base, "patches": [edited]}) == key
