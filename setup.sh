#!/usr/bin/env bash
# One entry point for a fresh machine that has only this repository:
#   ./setup.sh demo    install what is missing (apt), build, run the Trojan demo (spade demo)
#   ./setup.sh test    install what is missing, build, run every test
#   ./setup.sh build   install what is missing and build
#   ./setup.sh sanitize  build with AddressSanitizer + UndefinedBehaviorSanitizer (CPU only) into
#                      build-sanitize/ and run the test suite there (docs/reliability.md)
# The build goes to build/ (override with SPADE_BUILD_DIR); extra CMake flags via SPADE_CMAKE_FLAGS
# (e.g. -DSPADE_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-demo}"
build="${SPADE_BUILD_DIR:-build}"

packages=(cmake g++ make libeigen3-dev nlohmann-json3-dev catch2 libstb-dev zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

jobs="$(nproc 2>/dev/null || echo 2)"
if [ "$mode" = sanitize ]; then
  sbuild="${SPADE_SANITIZE_BUILD_DIR:-build-sanitize}"
  # -g1 (line tables) is enough for the sanitizers' stack traces and builds faster than -g.
  cmake -S . -B "$sbuild" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
    -DSPADE_SANITIZE=ON -DSPADE_CUDA=OFF >/dev/null
  cmake --build "$sbuild" -j "$jobs" --target spade spade_tests
  # Any report fails the test that triggered it; leaks are reported too. The tests on ../shared's
  # real data (whole-dataset sweeps) and those labelled long (tests/CMakeLists.txt) run in the
  # ordinary build only.
  export SPADE_TEST_SKIP_SHARED=1
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  (cd "$sbuild" && ctest --output-on-failure -j "$jobs" -LE long ${SPADE_SANITIZE_CTEST_ARGS:-})
  exit 0
fi
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release ${SPADE_CMAKE_FLAGS:-} >/dev/null
cmake --build "$build" -j "$jobs"

case "$mode" in
  build) ;;
  test)
    (cd "$build" && ctest --output-on-failure -j "$jobs")
    ;;
  demo)
    # The Trojan experiment on one image with the committed backdoored CIFAR ResNet-20
    # (models/README.md) and a scene the demo renders itself: needs nothing outside the repository.
    "$build/spade" demo --out demo_out
    ;;
  *)
    echo "usage: ./setup.sh [demo|test|build|sanitize]" >&2
    exit 2
    ;;
esac
