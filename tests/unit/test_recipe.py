"""Recipes: the project's own validate, and bad ones get one clear message naming file and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.config.recipe import MAX_NESTING, Recipe, json_schema, load_recipe
from builder.errors import RecipeError
from tests.helpers import RECIPES, ROOT, absolutize, load_explicit


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_project_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.artifacts


def test_default_recipe_pins_its_source_and_leaves_patches_to_the_series() -> None:
    recipe = load_recipe(RECIPES / "linux-static.yaml")
    assert recipe.source.debian is not None
    assert len(recipe.source.debian.sha256) == 64
    assert recipe.patches is None and recipe.environment.base is None
    assert recipe.artifacts[0].name == "qemu-ga-patched-static"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("linux-static-qemu-*.yaml")), ids=str)
def test_series_recipes_pin_everything(path: Path) -> None:
    recipe = load_recipe(path)
    pinned = recipe.source.debian or recipe.source.mirror  # by apt, or by its pool path
    assert pinned is not None and len(pinned.sha256) == 64
    assert recipe.environment.base.debootstrap is not None
    assert recipe.patches and all(len(p.sha256) == 64 for p in recipe.patches)


RELEASE_RECIPES = [
    *sorted(RECIPES.glob("linux-static-qemu-*.yaml")),
    RECIPES / "linux-static-ubuntu.yaml",
    RECIPES / "windows-msi-qemu-10.2.yaml",
    RECIPES / "windows-msi-qemu-11.1.yaml",
    RECIPES / "windows-msi-fedora.yaml",
]


@pytest.mark.parametrize("path", RELEASE_RECIPES, ids=lambda p: p.name)
def test_release_recipes_name_their_files_by_version_and_machine(path: Path) -> None:
    """Their files share one release: each name says its version, system and machine; the
    packages are named by the tool, and no loose service file (unversioned) is written."""
    recipe = load_recipe(path)
    named = {a.kind: a.name for a in recipe.artifacts if a.name is not None}
    if recipe.target == "linux":
        assert named == {"static-elf": "qemu-ga-patched-{version}-linux-x86_64-static"}
        assert {a.kind for a in recipe.artifacts} == {"static-elf", "deb", "rpm", "tarball"}
        assert recipe.services is not None and recipe.services.kinds == []
        assert recipe.services.exec_path == "/usr/sbin/qemu-ga-patched-static"
    else:
        assert named == {
            "msi": "qemu-ga-patched-{version}-windows-x86_64.msi",
            "pe": "qemu-ga-patched-{version}-windows-x86_64.exe",
        }


def test_the_default_recipes_keep_the_design_cards_names() -> None:
    linux = load_recipe(RECIPES / "linux-static.yaml")
    assert [a.name for a in linux.artifacts] == ["qemu-ga-patched-static", None, None, None]
    assert linux.services is not None and linux.services.kinds == ["systemd", "sysvinit", "upstart"]
    windows = load_recipe(RECIPES / "windows-msi.yaml")
    assert [a.name for a in windows.artifacts] == ["qemu-ga-x86_64.msi", "qemu-ga.exe"]


@pytest.mark.parametrize(
    "name", ["{version}", "qemu-ga-{version}", "a{version}b{version}c", "qemu-ga+{version}.exe"]
)
def test_the_version_placeholder_is_accepted(write_recipe, name: str) -> None:
    data = _mutate(("artifacts", 0, "name"), name)
    assert load_recipe(write_recipe(data)).artifacts[0].name == name


def test_ubuntu_recipe_is_pinned_by_digest() -> None:
    recipe = load_recipe(RECIPES / "linux-static-ubuntu.yaml")
    image = recipe.environment.base.image
    assert image is not None and image.startswith("ubuntu:24.04@sha256:")
    assert len(image.split("@sha256:")[1]) == 64
    assert recipe.environment.dockerfile.name == "Dockerfile.linux"


def _mutate(path: tuple, value: object) -> dict:
    data = absolutize(load_explicit())
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()

INVALID = [
    # (what, mutation path, value, expected field path in the message, expected words)
    ("unknown top-level key", ("colour",), "blue", "colour", "unknown field"),
    ("misspelt field", ("environment", "dockerfle"), "x", "environment.dockerfle", "unknown field"),
    ("missing name", ("name",), _DELETE, "name", "Field required"),
    ("bad name", ("name",), "Has Spaces", "name", "'Has Spaces' is not a name"),
    ("name wrong type", ("name",), 42, "name", "string"),
    ("short sha256", ("source", "debian", "sha256"), "abc", "source.debian.sha256", "is not a sha"),
    ("upper-case sha256", ("source", "debian", "sha256"), "A" * 64, "source.debian.sha256", ""),
    ("two source kinds", ("source", "local"), {"path": "/tmp"}, "source", "exactly one"),
    ("no source kind", ("source",), {}, "source", "exactly one"),
    (
        "unpinned image",
        ("environment", "base"),
        {"image": "ubuntu:24.04"},
        "environment.base",
        "not pinned",
    ),
    ("patch sha missing", ("patches",), [{"path": "x.patch"}], "patches[0].sha256", "required"),
    ("patches not a list", ("patches",), "x.patch", "patches", "list"),
    ("no artifacts", ("artifacts",), [], "artifacts", "at least 1"),
    (
        "artifact escapes",
        ("artifacts",),
        [{"path": "../x", "name": "x"}],
        "artifacts[0]",
        "inside the build directory",
    ),
    (
        "reserved artifact name",
        ("artifacts",),
        [{"path": "qga/qemu-ga", "name": "SHA256SUMS"}],
        "artifacts",
        "reserved",
    ),
    (
        "duplicate artifact",
        ("artifacts",),
        [{"path": "a", "name": "x"}, {"path": "b", "name": "x"}],
        "artifacts",
        "used twice",
    ),
    (
        "bad artifact kind",
        ("artifacts",),
        [{"path": "a", "name": "x", "kind": "exe"}],
        "artifacts[0].kind",
        "static-elf",
    ),
    ("flags not strings", ("configure", "flags"), [1, 2], "configure.flags[0]", "string"),
    ("absurd flag count", ("configure", "flags"), ["--x"] * 1000, "configure.flags", "at most"),
    ("absurd string", ("description",), "x" * 10000, "description", "at most"),
    ("negative epoch", ("build", "source_date_epoch"), -1, "build.source_date_epoch", "greater"),
    ("bad memory", ("build", "memory"), "lots", "build.memory", "is not a size"),
    ("unknown service", ("services", "kinds"), ["launchd"], "services.kinds[0]", "systemd"),
    (
        "bad debian suite",
        ("environment", "base", "debootstrap", "suite"),
        "Trixie 13",
        "environment.base.debootstrap.suite",
        "is not a Debian suite",
    ),
    (
        "ninja target that is an option",
        ("build", "targets"),
        ["-t", "clean"],
        "build.targets[0]",
        "is not a ninja target",
    ),
    (
        "dot-name artifact",
        ("artifacts",),
        [{"path": "qga/qemu-ga", "name": ".bashrc"}],
        "artifacts[0].name",
        "is not a file name",
    ),
    ("dot-dot artifact", ("artifacts",), [{"path": "a", "name": ".."}], "artifacts[0].name", ""),
    (
        "artifact named like the manifest",
        ("artifacts",),
        [{"path": "qga/qemu-ga", "name": "manifest.json"}],
        "artifacts",
        "reserved",
    ),
    (
        "artifact named like a release's record",
        ("artifacts",),
        [{"path": "qga/qemu-ga", "name": "release.json"}],
        "artifacts",
        "reserved",
    ),
    (
        "build arg the tool sets",
        ("environment", "build_args"),
        {"BASE_IMAGE": "evil:latest"},
        "environment.build_args",
        "set by the tool",
    ),
    (
        "PACKAGES as a build arg",
        ("environment", "build_args"),
        {"PACKAGES": "netcat"},
        "environment.build_args",
        "environment.packages",
    ),
    (
        "configure flag owned by msi:",
        ("configure", "flags"),
        ["--static", "--qemu-ga-manufacturer=Evil"],
        "configure.flags",
        "msi.manufacturer",
    ),
    (
        "unknown placeholder",
        ("artifacts", 0, "name"),
        "qemu-ga-{arch}-static",
        "artifacts[0].name",
        "'{arch}': an artifact name takes no placeholder but {version}",
    ),
    (
        "placeholder in another case",
        ("artifacts", 0, "name"),
        "qemu-ga-{Version}",
        "artifacts[0].name",
        "no placeholder but {version}",
    ),
    (
        "unclosed placeholder",
        ("artifacts", 0, "name"),
        "qemu-ga-{version",
        "artifacts[0].name",
        "'{': an artifact name takes no placeholder",
    ),
    (
        "placeholder inside a placeholder",
        ("artifacts", 0, "name"),
        "{ver{version}sion}",
        "artifacts[0].name",
        "no placeholder but {version}",
    ),
    (
        "dot-name with a placeholder",
        ("artifacts", 0, "name"),
        ".{version}",
        "artifacts[0].name",
        "is not a file name",
    ),
    (
        "placeholder names too long",
        ("artifacts", 0, "name"),
        "{version}" * 129,
        "artifacts[0].name",
        "is not a file name",
    ),
    (
        "mirror path with a host",
        ("source",),
        {
            "mirror": {
                "path": "http://h.example/pool/main/q/qemu/qemu_11.1.1+ds.orig.tar.xz",
                "sha256": "a" * 64,
            }
        },
        "source.mirror.path",
        "is not a Debian orig tarball's path under the mirror",
    ),
    (
        "mirror path that climbs",
        ("source",),
        {"mirror": {"path": "pool/main/q/../../../etc/qemu_1.0.orig.tar.xz", "sha256": "a" * 64}},
        "source.mirror.path",
        "is not a Debian orig tarball's path",
    ),
    (
        "mirror path that is no orig tarball",
        ("source",),
        {"mirror": {"path": "pool/main/q/qemu/qemu_11.1.1+ds-1.dsc", "sha256": "a" * 64}},
        "source.mirror.path",
        "e.g. pool/main/q/qemu/qemu_11.1.1+ds.orig.tar.xz",
    ),
    (
        "backports that are no packages",
        ("environment", "build_args"),
        {"BACKPORTS": "python3-qemu-qmp --allow-unauthenticated"},
        "environment.build_args",
        "BACKPORTS: '--allow-unauthenticated' is not a package",
    ),
    (
        "bad package name",
        ("environment", "packages"),
        ["gcc; rm -rf /"],
        "environment.packages[0]",
        "is not a package",
    ),
]


@pytest.mark.parametrize("what,path,value,field,words", INVALID, ids=[i[0] for i in INVALID])
def test_invalid_recipe_names_file_and_field(
    write_recipe, what: str, path: tuple, value: object, field: str, words: str
) -> None:
    recipe_path = write_recipe(_mutate(path, value))
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_path)
    message = str(caught.value)
    assert str(recipe_path) in message
    assert f": {field}" in message, message
    assert words in message, message


def test_a_name_too_long_with_the_fixed_version_is_refused(write_recipe) -> None:
    """With package.version set, what `{version}` makes is known at validate: checked there."""
    data = _mutate(("artifacts", 0, "name"), "qemu-ga-{version}-{version}")
    data["package"] = {"version": "10.0.13+" + "a" * 55}  # 63 characters: a valid version
    path = write_recipe(data)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert f"{path}: (top level): artifacts: name 'qemu-ga-{{version}}-{{version}}'" in message
    assert "with package.version" in message and "not a file name an artifact can have" in message


def test_missing_file() -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(Path("/nonexistent/recipe.yaml"))


def test_directory_is_not_a_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(tmp_path)


def test_yaml_syntax_error_names_line(write_recipe) -> None:
    path = write_recipe("name: x\nenvironment: [unclosed\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert f"{path}:" in str(caught.value) and "YAML error" in str(caught.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_not_a_mapping(write_recipe, text: str) -> None:
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(write_recipe(text))


def test_aliases_are_refused(write_recipe) -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nname: *c\n"
    with pytest.raises(RecipeError, match="aliases are not allowed"):
        load_recipe(write_recipe(bomb))


def test_deep_nesting_is_refused(write_recipe) -> None:
    deep = "name: " + "[" * (MAX_NESTING + 5) + "]" * (MAX_NESTING + 5) + "\n"
    with pytest.raises(RecipeError, match="nesting deeper"):
        load_recipe(write_recipe(deep))


def test_non_utf8_is_refused(write_recipe) -> None:
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(write_recipe(b"name: caf\xe9\n"))


def test_huge_file_is_refused(write_recipe) -> None:
    with pytest.raises(RecipeError, match="larger than"):
        load_recipe(write_recipe("# " + "x" * 300_000 + "\n"))


def test_schema_lists_fields_and_forbids_extras() -> None:
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert {"name", "environment", "source", "patches", "artifacts"} <= set(schema["properties"])
    assert "Debootstrap" in schema["$defs"]
    json.dumps(schema)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
    )


def test_cli_validate_bad_recipe_exit_code_and_no_traceback(write_recipe) -> None:
    path = write_recipe(_mutate(("environment", "dockerfle"), "x"))
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: environment.dockerfle: unknown field" in result.stderr


def test_cli_run_missing_recipe(tmp_path: Path) -> None:
    result = run_cli("run", str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "recipe file not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_schema_is_json() -> None:
    result = run_cli("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["title"] == "qga-builder recipe"


def test_cli_validate_all_project_recipes() -> None:
    result = run_cli("validate", *map(str, sorted(RECIPES.glob("*.yaml"))))
    assert result.returncode == 0, result.stderr


# --- errors that help ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,key,lines",
    [
        ("name: a\ndescription: x\nname: b\n", "name", (1, 3)),
        ("build:\n  jobs: 2\n  memory: 4g\n  jobs: 4\n", "jobs", (2, 4)),
    ],
    ids=["top level", "nested"],
)
def test_duplicate_keys_are_refused_naming_the_file_the_key_and_both_lines(
    write_recipe, text: str, key: str, lines: tuple[int, int]
) -> None:
    """PyYAML keeps the last of two equal keys: the first would have been silently dropped."""
    path = write_recipe(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    message = caught.value.message
    assert message.startswith(f"{path}:{lines[1]}:")
    assert f"duplicate key {key!r} at lines {lines[0]} and {lines[1]}" in message


def test_pattern_mismatches_are_said_in_words_with_an_example(write_recipe) -> None:
    path = write_recipe(_mutate(("build", "memory"), "4gb"))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert caught.value.message == (
        f"{path}: build.memory: '4gb' is not a size: a number with k, m or g, e.g. 4g"
    )


def _patterns(schema: object) -> list[str]:
    if isinstance(schema, dict):
        own = [schema["pattern"]] if isinstance(schema.get("pattern"), str) else []
        return own + [p for value in schema.values() for p in _patterns(value)]
    if isinstance(schema, list):
        return [p for value in schema for p in _patterns(value)]
    return []


def test_every_recipe_pattern_has_words_and_a_valid_example() -> None:
    """The table covers every pattern a recipe field has, so no error falls back to a regex."""
    import re

    from builder.config.patterns import words_for

    found = set(_patterns(json_schema()))
    assert len(found) > 15
    for pattern in found:
        words = words_for(pattern)
        assert words is not None, pattern
        assert re.search(pattern, words.example), (pattern, words.example)


@pytest.mark.parametrize(
    "path,value,field,guess",
    [
        (("patchs",), [], "patchs", "patches"),
        (("build", "jbos"), 2, "build.jbos", "jobs"),
        (("environment", "dokcerfile"), "x", "environment.dokcerfile", "dockerfile"),
        (("artifacts", 0, "knd"), "file", "artifacts[0].knd", "kind"),
    ],
)
def test_an_unknown_field_says_which_one_was_meant(
    write_recipe, path: tuple, value: object, field: str, guess: str
) -> None:
    recipe_path = write_recipe(_mutate(path, value))
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_path)
    assert f"{recipe_path}: {field}: unknown field; did you mean {guess!r}?" in str(caught.value)


def test_an_unknown_field_far_from_any_lists_the_fields_there(write_recipe) -> None:
    recipe_path = write_recipe(_mutate(("build", "colour"), "blue"))
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_path)
    message = caught.value.message
    assert (
        f"{recipe_path}: build.colour: unknown field (here: targets, source_date_epoch" in message
    )


@pytest.mark.parametrize(
    "given,meant",
    [
        ("linux-static", "recipes/linux-static.yaml"),
        ("recipes/linux-statc.yaml", "recipes/linux-static.yaml"),
        ("recipes/linux-static.yml", "recipes/linux-static.yaml"),
    ],
)
def test_a_missing_recipe_suggests_the_one_meant_and_builds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, given: str, meant: str
) -> None:
    from builder.cli import main

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "linux-static.yaml").write_text("name: x\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", given]) == 2
    err = capsys.readouterr().err
    assert f"{given}: recipe file not found; did you mean {meant}?" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "flag,value,words",
    [
        ("--base-image", "debian:trixie", "image 'debian:trixie' is not pinned"),
        ("--base-image", "debian:trixie@sha256:abc", "image 'debian:trixie@sha256:abc' is not"),
        ("--qemu-ref", "v10 .0", "'v10 .0' is not a git tag"),
    ],
)
def test_an_override_error_is_blamed_on_its_flag(capsys, flag: str, value: str, words: str) -> None:
    from builder.cli import main

    assert main(["plan", str(RECIPES / "linux-static.yaml"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qga-builder: error: {flag}: {words}"), err
    assert "linux-static.yaml" not in err  # the recipe is not what is wrong


def test_a_misspelt_choice_says_which_one_was_meant(write_recipe) -> None:
    path = write_recipe(_mutate(("artifacts", 0, "kind"), "statc-elf"))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert f"{path}: artifacts[0].kind: 'statc-elf': Input should be" in caught.value.message
    assert "did you mean 'static-elf'?" in caught.value.message
