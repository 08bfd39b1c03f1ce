"""The plan is pure data: stable, and every input moves the hashes it should."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from builder.commands.common import load_plan
from builder.config.overrides import UPSTREAM_GIT_URL, Overrides, apply_overrides
from builder.config.plan import make_plan, project_root, resolve_artifacts
from builder.config.recipe import validate_recipe
from builder.errors import RecipeError, UsageError
from builder.stages.package import package_spec
from tests.helpers import RECIPES, absolutize, load_default, load_explicit, localize


def plan_of(data: dict, recipe_path: Path = RECIPES / "linux-static.yaml", **kwargs):
    recipe = validate_recipe(data, str(recipe_path))
    return make_plan(recipe, recipe_path, b"recipe bytes", **kwargs)


def test_default_plan_leaves_patches_and_environment_to_the_series() -> None:
    plan = plan_of(load_default())
    assert plan.recipe_name == "linux-static"
    assert plan.output_dir == Path("out/linux-static")
    assert plan.series_decides == ("patches", "base", "packages", "configure")
    assert plan.patches == () and plan.image.base.kind == "series"
    assert plan.source.kind == "debian" and plan.source.version.startswith("1:10.0.")


def test_explicit_plan() -> None:
    plan = plan_of(load_explicit(), RECIPES / "linux-static-qemu-10.0.yaml")
    assert plan.series_decides == ()
    assert plan.image.base.kind == "debootstrap"
    assert plan.image.base.reference == "qga-builder/base:trixie-minbase"
    assert plan.image.dockerfile.name == "Dockerfile.linux"
    assert plan.source.kind == "debian" and plan.source.version.startswith("1:10.0.")
    assert plan.patches[0].path.is_file()
    assert dict(plan.image.build_args)["PACKAGES"].startswith("gcc ")
    assert "--static" in plan.configure_flags
    assert plan.targets == ("qemu-ga",)


def test_plan_is_deterministic() -> None:
    assert plan_of(load_default()).cache_key == plan_of(load_default()).cache_key
    assert plan_of(load_default()).image.inputs_hash == plan_of(load_default()).image.inputs_hash


def test_output_dir_does_not_change_the_cache_key(tmp_path: Path) -> None:
    a = plan_of(load_default())
    b = plan_of(load_default(), output_dir=tmp_path / "elsewhere")
    assert b.output_dir == tmp_path / "elsewhere"
    assert a.cache_key == b.cache_key


@pytest.mark.parametrize(
    "path,value",
    [
        (("environment", "packages"), ["gcc"]),
        (("environment", "base", "debootstrap", "suite"), "bookworm"),
        (("environment", "build_args"), {"EXTRA": "1"}),
    ],
)
def test_image_inputs_move_the_image_hash(path: tuple, value: object) -> None:
    data = load_explicit()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert plan_of(data).image.inputs_hash != plan_of(load_explicit()).image.inputs_hash


@pytest.mark.parametrize(
    "path,value",
    [
        (("configure", "flags"), ["--static"]),
        (("patches",), []),
        (("source", "debian", "sha256"), "0" * 64),
        (("build", "source_date_epoch"), 1),
        (("build", "targets"), ["qemu-ga", "all"]),
    ],
)
def test_build_inputs_move_the_cache_key(path: tuple, value: object) -> None:
    data = load_explicit()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert plan_of(data).cache_key != plan_of(load_explicit()).cache_key


def test_image_tag_depends_on_the_base_image_id() -> None:
    image = plan_of(load_default()).image
    assert image.tag("sha256:aaa") != image.tag("sha256:bbb")
    assert image.tag("sha256:aaa").startswith("qga-builder/dockerfile.linux:")


def test_dockerfile_change_moves_the_image_hash(tmp_path: Path) -> None:
    data = absolutize(load_default())
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    data["environment"]["dockerfile"] = str(dockerfile)
    first = plan_of(data, allow_outside_project=True).image.inputs_hash
    dockerfile.write_text("FROM scratch\nRUN true\n")
    assert plan_of(data, allow_outside_project=True).image.inputs_hash != first


def test_missing_dockerfile_is_a_clear_error() -> None:
    data = load_default()
    data["environment"]["dockerfile"] = "nope/Dockerfile"
    with pytest.raises(RecipeError, match=r"environment\.dockerfile: .*nope/Dockerfile does not"):
        plan_of(data)


@pytest.mark.parametrize("field", ["dockerfile", "patch"])
def test_files_outside_the_recipes_project_need_the_users_word(tmp_path: Path, field: str) -> None:
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / ".git").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = localize(load_explicit(), project / "recipes")
    outside = elsewhere / ("Dockerfile" if field == "dockerfile" else "evil.patch")
    outside.write_text("FROM scratch\n")
    if field == "dockerfile":
        data["environment"]["dockerfile"] = "../../elsewhere/Dockerfile"
    else:
        digest = hashlib.sha256(outside.read_bytes()).hexdigest()
        data["patches"] = [{"path": str(outside), "sha256": digest}]
    recipe_path = project / "recipes" / "r.yaml"
    with pytest.raises(RecipeError, match="outside the recipe's project") as raised:
        plan_of(data, recipe_path)
    assert str(outside) in raised.value.message and str(project) in raised.value.message
    assert "--allow-outside-project" in raised.value.hint
    assert plan_of(data, recipe_path, allow_outside_project=True)
    # Inside the project (a Dockerfile one level above recipes/) is fine.
    assert project_root(recipe_path) == project
    assert plan_of(localize(load_default(), project / "recipes"), recipe_path)


def test_qemu_ref_override_uses_upstream_git() -> None:
    data = apply_overrides(load_default(), Overrides(qemu_ref="v10.0.2"))
    plan = plan_of(data)
    assert plan.source.kind == "git"
    assert plan.source.url == UPSTREAM_GIT_URL
    assert plan.source.tag == "v10.0.2"
    assert plan.source.commit is None


def test_source_override_tree_and_tarball(tmp_path: Path) -> None:
    tree = tmp_path / "qemu"
    tree.mkdir()
    assert plan_of(apply_overrides(load_default(), Overrides(source=tree))).source.kind == "local"
    tarball = tmp_path / "qemu.tar.xz"
    tarball.write_bytes(b"not really")
    plan = plan_of(apply_overrides(load_default(), Overrides(source=tarball)))
    assert plan.source.kind == "tarball"
    assert plan.source.sha256 == hashlib.sha256(b"not really").hexdigest()


def test_base_image_override_is_validated() -> None:
    data = apply_overrides(load_default(), Overrides(base_image="debian:trixie@sha256:" + "a" * 64))
    assert plan_of(data).image.base.kind == "registry"
    with pytest.raises(Exception, match="not pinned"):
        plan_of(apply_overrides(load_default(), Overrides(base_image="debian:trixie")))


def test_conflicting_overrides() -> None:
    with pytest.raises(UsageError, match="give one of them"):
        apply_overrides(load_default(), Overrides(qemu_ref="v1", source=Path("/tmp")))


def test_missing_source_override_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        apply_overrides(load_default(), Overrides(source=tmp_path / "missing"))


def test_overrides_are_recorded() -> None:
    overrides = Overrides(qemu_ref="v10.0.2", output=Path("x"))
    plan = plan_of(apply_overrides(load_default(), overrides), overrides=overrides.recorded())
    assert plan.overrides == {"qemu_ref": "v10.0.2", "output": "x"}
    assert plan.summary()["overrides"] == {"qemu_ref": "v10.0.2", "output": "x"}


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_project_recipe_plans(path: Path) -> None:
    plan, text = load_plan(path, Overrides())
    assert plan.image.dockerfile.is_file()
    assert all(patch.path.is_file() for patch in plan.patches)
    assert len(plan.cache_key) == 64 and text.startswith("#")
    if plan.image.base.kind == "registry":
        assert "@sha256:" in plan.image.base.reference


def test_cache_key_does_not_depend_on_where_the_checkout_lives(tmp_path: Path) -> None:
    """Two clones in different directories make the same MSI PackageCode (it comes from this)."""
    project = RECIPES.parent
    keys = []
    for clone in ("a", "deeper/b"):
        root = tmp_path / clone
        for part in ("recipes", "patches"):
            shutil.copytree(project / part, root / part)
        for dockerfile in project.glob("Dockerfile.*"):
            shutil.copy(dockerfile, root / dockerfile.name)
        (root / "pyproject.toml").write_text("")  # a clone is a project
        output = Overrides(output=root / "out")
        plan, _ = load_plan(root / "recipes" / "windows-msi.yaml", output)
        keys.append(plan.cache_key)
    assert keys[0] == keys[1]
    recipe = tmp_path / "a" / "recipes" / "windows-msi.yaml"
    recipe.write_text(recipe.read_text().replace("distro: Windows", "distro: Lab"))
    assert load_plan(recipe, Overrides())[0].cache_key != keys[0]  # a real input still counts


def test_locked_refuses_an_unpinned_git_source() -> None:
    data = apply_overrides(load_default(), Overrides(qemu_ref="v10.0.2"))
    with pytest.raises(RecipeError, match="not pinned by `commit:`"):
        plan_of(data, locked=True)
    data["source"]["git"]["commit"] = "a" * 40
    assert plan_of(data, locked=True).source.commit == "a" * 40


def test_a_debootstrap_base_is_named_by_every_input(tmp_path: Path) -> None:
    from builder.stages.base_image import debootstrap_inputs, debootstrap_tag, os_release

    family = "qga-builder/base:trixie-minbase"
    one = debootstrap_tag(family, debootstrap_inputs("trixie", "minbase", "http://a/debian"))
    assert one.startswith(family + "-") and len(one) == len(family) + 13
    assert one != debootstrap_tag(family, debootstrap_inputs("trixie", "minbase", "http://b/d"))
    assert one != debootstrap_tag(family, debootstrap_inputs("trixie", "buildd", "http://a/d"))
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/os-release").write_text('ID=debian\nPRETTY_NAME="Debian GNU/Linux 13"\n')
    assert os_release(tmp_path) == "Debian GNU/Linux 13"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").symlink_to("/etc/shadow")  # a link out is not followed
    assert os_release(tmp_path) == "Debian GNU/Linux 13"


def test_version_in_names_is_the_qemu_version_plus_qga1() -> None:
    plan = plan_of(absolutize(load_explicit()), RECIPES / "linux-static-qemu-10.0.yaml")
    assert plan.artifacts[0].name == "qemu-ga-patched-{version}-linux-x86_64-static"  # template
    assert plan.release_version("10.0.13") == "10.0.13+qga1"
    resolved = resolve_artifacts(plan, "10.0.13")
    assert [a.name for a in resolved] == ["qemu-ga-patched-10.0.13+qga1-linux-x86_64-static"]
    assert resolved[0] == replace(plan.artifacts[0], name=resolved[0].name)  # nothing else


def test_version_in_names_is_package_version_when_the_recipe_sets_it() -> None:
    data = absolutize(load_explicit())
    data["package"] = {"version": "10.0.13+acme2"}
    plan = plan_of(data, RECIPES / "linux-static-qemu-10.0.yaml")
    assert package_spec(plan, "10.0.13", 1, "#!/bin/sh\n").version == plan.release_version(
        "10.0.13"
    )
    assert [a.name for a in resolve_artifacts(plan, "10.0.13")] == [
        "qemu-ga-patched-10.0.13+acme2-linux-x86_64-static"
    ]


def test_windows_names_take_the_qemu_version() -> None:
    """A Windows recipe has no `package:`: its version is the QEMU version's default."""
    path = RECIPES / "windows-msi-qemu-10.2.yaml"
    plan = plan_of(absolutize(yaml.safe_load(path.read_text())), path)
    assert [a.name for a in resolve_artifacts(plan, "10.2.2")] == [
        "qemu-ga-patched-10.2.2+qga1-windows-x86_64.msi",
        "qemu-ga-patched-10.2.2+qga1-windows-x86_64.exe",
    ]


def test_names_without_the_placeholder_are_the_plans() -> None:
    plan = plan_of(load_default())
    assert resolve_artifacts(plan, "10.0.13") is plan.artifacts


def test_a_version_that_makes_a_bad_name_is_refused_naming_the_recipe() -> None:
    data = absolutize(load_explicit())
    data["artifacts"][0]["name"] = "q" * 120 + "-{version}"  # 133 characters resolved
    plan = plan_of(data, RECIPES / "linux-static-qemu-10.0.yaml")
    with pytest.raises(RecipeError) as caught:
        resolve_artifacts(plan, "10.0.13")
    message = caught.value.message
    assert message.startswith(f"{RECIPES / 'linux-static-qemu-10.0.yaml'}: artifacts: name 'qqq")
    assert "with version 10.0.13+qga1: " in message and "not a file name" in message


def test_two_names_alike_after_the_version_are_refused() -> None:
    data = absolutize(load_explicit())
    agent = data["artifacts"][0]
    data["artifacts"][1:1] = [{**agent, "name": "qemu-ga-10.0.13+qga1"}]
    agent["name"] = "qemu-ga-{version}"
    plan = plan_of(data, RECIPES / "linux-static-qemu-10.0.yaml")
    with pytest.raises(RecipeError, match=r"artifact name 'qemu-ga-10\.0\.13\+qga1' is used twice"):
        resolve_artifacts(plan, "10.0.13")


def test_own_patches_on_the_default_recipe_go_after_the_series_set(tmp_path: Path) -> None:
    """The README's example: the default recipe plus `patches:`, no base of its own."""
    from builder.stages.series import choose, load_series

    data = load_default()
    # A patch in the project stands in for the user's own (recipes name files in their project).
    own = sorted((RECIPES.parent / "patches" / "qemu-10.0").glob("*.patch"))[-1]
    data["patches"] = [{"path": str(own), "sha256": hashlib.sha256(own.read_bytes()).hexdigest()}]
    plan = plan_of(data)
    assert plan.series_decides == ("series-patches-first", "base", "packages", "configure")
    choice = choose(plan, "10.0.13")
    spec = load_series("10.0")
    names = [p.path.name for p in choice.patch_plans]
    assert names == [*spec.targets["linux"].patches, own.name]  # ours first, the user's after
    assert choice.image_plan.base.suite == spec.targets["linux"].suite
    assert dict(choice.image_plan.build_args)["PACKAGES"].split() == spec.targets["linux"].packages
    assert choice.record["own_patches"] == {own.name: data["patches"][0]["sha256"]}
    assert "--static" in choice.configure_flags
    # and the key differs from the default recipe's: the user's patch is an input
    assert choice.run_key != choose(plan_of(load_default()), "10.0.13").run_key
