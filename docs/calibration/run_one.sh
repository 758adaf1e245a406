#!/usr/bin/env bash
# usage: run_one.sh WORKTREE PATCH  -> prints "CAUGHT seed N: violation" or "MISSED" or "BUILD-FAIL"
# Applies PATCH in WORKTREE (a scratch clone), builds the simulator in release, runs the
# default sim and stops at the first failing seed.
set -u
wt=$1; patch=$2
cd "$wt" || exit 2
git checkout -q -- . && git clean -qfd -e target
if ! git apply "$patch"; then echo "APPLY-FAIL $(basename $patch)"; exit 0; fi
if ! cargo build -q --release -p hvguest-sim --bin sim 2>/tmp/build.$$; then echo "BUILD-FAIL $(basename $patch)"; tail -5 /tmp/build.$$; git checkout -q -- .; exit 0; fi
start=$(date +%s)
line=$(timeout 900 ./target/release/sim "${@:3}" 2>&1 | grep -m1 -E 'FAIL seed|panicked|all [0-9]+ seed\(s\) passed|seed\(s\) failed')
end=$(date +%s)
git checkout -q -- .
case "$line" in
  *"passed"*) echo "MISSED $(basename $patch) ($((end-start)) s)";;
  "") echo "UNKNOWN $(basename $patch) ($((end-start)) s)";;
  *) echo "CAUGHT $(basename $patch) ($((end-start)) s): $line";;
esac
