"""What a GNU ld link map (`-Wl,-Map=FILE`) says went into a binary: the archive members the
linker pulled in (its first section, "Archive member included to satisfy reference by file")
and the object files it loaded (`LOAD` lines). An archive the linker searched but took nothing
from is not linked, so it is not listed; that is why the map is read, not `--trace`.

The map comes out of a build container: untrusted text, read line by line within bounds.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

MAX_MAP_BYTES = 256 << 20
MAX_INPUTS = 4096
_MEMBER = re.compile(r"^(?P<archive>/[^\s()]+\.a)\((?P<member>[^()\s]+)\)")
_LOAD = re.compile(r"^LOAD (?P<path>/\S+)$")


class LinkMapError(ValueError):
    pass


@dataclass
class LinkInputs:
    archives: dict[str, int] = field(default_factory=dict)  # normalized path -> members taken
    objects: list[str] = field(default_factory=list)  # object files loaded, in order

    def outside(self, tree: str) -> tuple[dict[str, int], list[str]]:
        """The archives and objects that did not come from the build tree `tree` (QEMU's own
        objects and libqemuutil.a are QEMU's source, said apart)."""
        prefix = tree.rstrip("/") + "/"
        archives = {p: n for p, n in self.archives.items() if not p.startswith(prefix)}
        objects = [p for p in self.objects if not p.startswith(prefix)]
        return archives, objects


def parse_link_map(text: str) -> LinkInputs:
    inputs = LinkInputs()
    for line in text.splitlines():
        if match := _MEMBER.match(line):
            path = posixpath.normpath(match["archive"])
            inputs.archives[path] = inputs.archives.get(path, 0) + 1
        elif (match := _LOAD.match(line)) and match["path"].endswith(".o"):
            path = posixpath.normpath(match["path"])
            if path not in inputs.objects:
                inputs.objects.append(path)
        if len(inputs.archives) + len(inputs.objects) > MAX_INPUTS:
            raise LinkMapError(f"it names more than {MAX_INPUTS} inputs")
    if not inputs.objects:
        raise LinkMapError("it loads no object file: not a GNU ld link map")
    return inputs
