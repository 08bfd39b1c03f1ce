"""The machines the Linux agent is built for, each named in one place: the recipe's
`architecture:` picks one; the plan, the cache key, manifest.json and release.json carry it;
packages and tarballs are named from it; the ELF check knows its machine number.

x86_64 builds natively in the build image. aarch64 is cross-compiled there with Debian's cross
toolchain (`gcc-aarch64-linux-gnu`) against the arm64 multiarch `-dev` packages (static
libraries); the built agent runs in the build container only through `qemu-aarch64`, called
explicitly (Debian's qemu-user; nothing is registered with the kernel's binfmt_misc).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    name: str  # as `uname -m`, RPM and the tarball's name say it
    debian: str  # Debian's name for the same machine
    elf_machine: int  # ELF e_machine
    elf_machine_name: str
    triplet: str  # the GNU triplet of the toolchain that builds for it
    cross: bool  # built with a cross toolchain in the (x86-64) build image
    qemu_user: str = ""  # the qemu-user emulator that runs its binaries on an x86-64 host
    qemu_system: str = ""  # the system emulator that boots its guests
    qemu_system_package: str = ""  # the Debian package that has it
    qemu_machine: tuple[str, ...] = ()  # its machine, accelerator (TCG: KVM does not work) and CPU
    console: str = "ttyS0"  # the guest's serial console
    # How much longer a step of its booted guest takes under TCG than an x86-64 guest's step
    # (measured: bench/builds.py vm-test-arm64), for the scenarios' time limits.
    tcg_slowdown: float = 1.0

    @property
    def strip_tool(self) -> str:
        return f"{self.triplet}-strip" if self.cross else "strip"

    @property
    def runner(self) -> tuple[str, ...]:
        """What runs one of its binaries in the build container: nothing for the native
        machine, the qemu-user emulator (called explicitly) for another."""
        return (self.qemu_user,) if self.cross else ()

    def build_packages(self, packages: Sequence[str]) -> list[str]:
        """A series' package list (written for a native build) for this machine: the C
        compiler and libc's headers stay (meson wants a compiler for the build machine too:
        QEMU's summary asks for it) and gain the cross compiler and the target's libc, each
        library `-dev` package becomes its multiarch one, and qemu-user joins (the check stage
        runs the agent's --version through it)."""
        if not self.cross:
            return list(packages)
        mapped = []
        for package in packages:
            if package == "gcc":
                mapped += [package, f"gcc-{self.triplet}"]
            elif package == "libc6-dev":
                mapped += [package, f"{package}:{self.debian}"]
            elif package.endswith("-dev") and ":" not in package:
                mapped.append(f"{package}:{self.debian}")
            else:
                mapped.append(package)
        return [*mapped, "qemu-user"]

    def recipe_problem(
        self, target: str, vm_test: bool, own_packages: Sequence[str] | None, kinds: Collection[str]
    ) -> str | None:
        """What a recipe for this machine asks that cannot be, in words for `validate`."""
        if not self.cross:
            return None
        if target == "windows":
            return (
                f"architecture {self.name} needs target: linux (Debian's mingw-w64 builds "
                "x86-64 Windows only; README: Windows on ARM)"
            )
        if vm_test and "deb" not in kinds:  # the bare agent's initramfs VM is x86-64 only
            return f"vm_test of an {self.name} agent installs its .deb: add a deb artifact"
        # Its own package list (instead of the series' one, which the tool makes for this
        # machine) must hold what the tool runs: the cross compiler, and qemu-user for the
        # built agent's --version in the build container.
        needed = [p for p in (f"gcc-{self.triplet}", "qemu-user") if p not in (own_packages or ())]
        if own_packages is not None and needed:
            return (
                f"architecture {self.name} with its own environment.packages needs "
                f"{' and '.join(needed)} in them (or leave environment.packages out: the QEMU "
                f"series then chooses them, made {self.debian})"
            )
        return None

    def dockerfile_problem(self, dockerfile: str) -> str:
        return (
            f"environment.dockerfile: {dockerfile} takes no {FOREIGN_ARCHITECTURE_ARG} build "
            f"arg, which architecture {self.name} needs (its -dev packages are {self.debian} ones)"
        )

    dockerfile_hint = "use Dockerfile.linux-cross, as recipes/linux-static-arm64.yaml does"

    def configure_flags(self, flags: Sequence[str]) -> tuple[str, ...]:
        """QEMU's configure flags for this machine: a cross build names its toolchain's prefix
        (configure then calls <triplet>-gcc, -pkg-config, -strip), unless the flags do."""
        if not self.cross or any(flag.startswith("--cross-prefix=") for flag in flags):
            return tuple(flags)
        return (f"--cross-prefix={self.triplet}-", *flags)


X86_64 = Architecture(
    name="x86_64",
    debian="amd64",
    elf_machine=62,
    elf_machine_name="x86-64",
    triplet="x86_64-linux-gnu",
    cross=False,
    qemu_system="qemu-system-x86_64",
    qemu_system_package="qemu-system-x86",
    qemu_machine=("-machine", "q35", "-accel", "tcg", "-cpu", "max"),
)
AARCH64 = Architecture(
    name="aarch64",
    debian="arm64",
    elf_machine=183,
    elf_machine_name="AArch64",
    triplet="aarch64-linux-gnu",
    cross=True,
    qemu_user="qemu-aarch64",
    qemu_system="qemu-system-aarch64",
    qemu_system_package="qemu-system-arm",
    # The distribution's kernel boots directly (no UEFI); the implementation-defined pointer
    # authentication is the cheap one to emulate (the architected QARMA is slow under TCG).
    qemu_machine=("-machine", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"),
    console="ttyAMA0",
    tcg_slowdown=3.0,
)
ARCHITECTURES = {arch.name: arch for arch in (X86_64, AARCH64)}
DEFAULT = X86_64
# The build image's build arg naming the foreign Debian architecture whose packages it installs
# (dpkg --add-architecture); set by the tool for a cross build, never by a recipe.
FOREIGN_ARCHITECTURE_ARG = "FOREIGN_ARCHITECTURE"

# The default machine's names, for what only ever concerns it (Debian index lookups of the
# build image's own toolchain and of the x86-64 guests).
ARCHITECTURE = X86_64.name
DEBIAN_ARCHITECTURE = X86_64.debian


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})"
        ) from None


def debian_architecture(name: str) -> Architecture:
    """The machine Debian calls `name` (a .deb's Architecture field)."""
    for arch in ARCHITECTURES.values():
        if arch.debian == name:
            return arch
    raise ValueError(f"no machine of ours is Debian's {name!r}")
