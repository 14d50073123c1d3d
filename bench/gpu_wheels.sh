#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks (bench/gpu_wheels.txt) for its Python 3.12, into .whl/
# (ignored), wrk's Debian packages into .whl/deb/, MNIST (and with PHOTOS=1 the photo sets) into .whl/data/; the
# device run carries .whl and bench/gpu_check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl/deb
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
grep -v '^#' bench/gpu_wheels.txt | grep . | while read -r requirement; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
        -d .whl "$requirement"
done
(cd .whl/deb && apt-get download -q wrk libluajit-5.1-2 libluajit-5.1-common >/dev/null)
# MNIST for the training benchmark (the machine reaches no network; MNIST=0 leaves it out), the photo sets only
# for the photo lease (PHOTOS=1: train400 and set12, 10 MB, which fit the carry only without MNIST's 11; BSD68's
# 6 MB more do not, so the checkpoint is scored on BSD68 back here); DATA_ROOT to take them from elsewhere.
rm -rf .whl/data && mkdir -p .whl/data
if [ "${MNIST:-1}" = 1 ]; then cp -r "${DATA_ROOT:-../shared/data}/mnist" .whl/data/; fi
if [ "${PHOTOS:-0}" = 1 ]; then
    mkdir -p .whl/data/natural
    for set in ${PHOTO_SETS:-train400 set12}; do cp -r "${DATA_ROOT:-../shared/data}/natural/$set" .whl/data/natural/; done
fi
# The device tool carries the working tree and .whl together, at most 64 MiB: the tree is ~37 MiB, 12 of them the
# study's extra seeds of its U-Nets (cache/study/*@*), which the device does not need. Over the limit, move them
# aside for the run (mkdir -p /tmp/aside && mv cache/study/*@* /tmp/aside/) and `git checkout cache/study` after.
tree=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
carried=$(du -sb .whl | cut -f1)
echo "tree $((tree / 1048576)) MiB + .whl $((carried / 1048576)) MiB = $(((tree + carried) / 1048576)) MiB (limit 64)"
