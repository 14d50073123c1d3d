#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks (bench/gpu_wheels.txt) for its Python 3.12, into .whl/
# (ignored), wrk's Debian packages into .whl/deb/, MNIST and the photo sets into .whl/data/ (about 52 MB in all,
# under the device tool's 64 MiB of carried paths); the device run carries .whl and bench/gpu_check.sh installs them there.
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
# MNIST for the training benchmark and the photo sets for the photo step (the machine reaches no network);
# DATA_ROOT to take them from elsewhere.
mkdir -p .whl/data/natural && cp -r "${DATA_ROOT:-../shared/data}/mnist" .whl/data/
for set in train400 set12 bsd68; do cp -r "${DATA_ROOT:-../shared/data}/natural/$set" .whl/data/natural/; done
du -sh .whl
