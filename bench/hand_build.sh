#!/usr/bin/env bash
# The baseline of the builder benchmark: what a person would script with the docker CLI to do
# the same work as `qga-builder run` on a static Linux recipe (VM test off): the same build
# image (optionally built from the same Dockerfile, base and packages), source tarball, patches
# and configure flags; compile qemu-ga only, strip, copy out, sha256. No checks, no records.
#
#   bench/hand_build.sh OUT TARBALL CONFIGURE_FLAGS_FILE IMAGE [PATCH...]
#   BUILD_DOCKERFILE=Dockerfile.linux BASE_IMAGE=ID PACKAGES="gcc ..." bench/hand_build.sh ...
#     (with BUILD_DOCKERFILE set, IMAGE is built first and tagged as given)
set -euo pipefail
out=$1 tarball=$2 flags_file=$3 image=$4
shift 4
if [[ -n "${BUILD_DOCKERFILE:-}" ]]; then
    context=$(mktemp -d)
    cp "$BUILD_DOCKERFILE" "$context/Dockerfile"
    docker build -q -t "$image" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "PACKAGES=$PACKAGES" "$context" >/dev/null
    rm -rf "$context"
fi
name=hand-build-$$
docker run -d --name "$name" --network none --user builder "$image" sleep infinity >/dev/null
trap 'docker rm -f "$name" >/dev/null' EXIT
docker exec "$name" mkdir -p /work/b/src /work/b/build /work/b/patches
docker cp "$tarball" "$name:/work/b/$(basename "$tarball")" >/dev/null
docker exec -w /work/b "$name" tar -xf "$(basename "$tarball")" -C src --strip-components=1
for patch in "$@"; do
    docker cp "$patch" "$name:/work/b/patches/" >/dev/null
    docker exec -w /work/b/src "$name" patch -p1 --batch -i "/work/b/patches/$(basename "$patch")" >/dev/null
done
mapfile -t flags < "$flags_file"
maps="-ffile-prefix-map=/work/b/src=/usr/src/qemu -ffile-prefix-map=/work/b/build=/usr/src/qemu/build"
docker exec -w /work/b/build "$name" ../src/configure "${flags[@]}" \
    "--extra-cflags=$maps" "--extra-cxxflags=$maps" >/dev/null
docker exec "$name" ninja -C /work/b/build qemu-ga >/dev/null
docker exec "$name" strip --strip-all /work/b/build/qga/qemu-ga
mkdir -p "$out"
docker cp "$name:/work/b/build/qga/qemu-ga" "$out/qemu-ga-patched-static" >/dev/null
(cd "$out" && sha256sum qemu-ga-patched-static > SHA256SUMS)
