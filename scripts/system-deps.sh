#!/usr/bin/env bash
# Install the Debian packages that test tiers need, for each tier present under tests/.
# As root (CI) missing packages are installed; otherwise the tier is recorded as skipped
# in .cache/tiers.env, and the pytest summary names it with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
out=.cache/tiers.env
# `system-deps.sh TIER...` (make up: sandbox) installs for those tiers only and leaves the
# test summary's record alone
if [ $# -gt 0 ]; then out=$(mktemp); trap 'rm -f "$out"' EXIT; fi
: > "$out"

# tier -> "command-that-must-exist:package ..." pairs
declare -A NEEDS=(
  [containers]="podman:podman runc:runc debootstrap:debootstrap"
  [browser]="chromium:chromium chromedriver:chromium-driver"
  [postgres]="pg_ctlcluster:postgresql"
  # user servers and local jobs of the embedded default run in bubblewrap sandboxes
  [hub]="bwrap:bubblewrap setpriv:util-linux"
  [security]="bwrap:bubblewrap setpriv:util-linux"
  [sandbox]="bwrap:bubblewrap setpriv:util-linux"
  # SuperLinks and SuperNodes of federations run in bubblewrap sandboxes
  [federation]="bwrap:bubblewrap setpriv:util-linux"
  # a private Slurm cluster in a temp folder (tests/slurm/cluster.py); no daemon starts
  [slurm]="slurmctld:slurmctld slurmd:slurmd scontrol:slurm-client munged:munge"
)
# tiers whose packages install without Debian's recommended extras
declare -A LEAN=([slurm]=1)

updated=0
tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=("${!NEEDS[@]}")
for tier in "${tiers[@]}"; do
  [ $# -gt 0 ] || [ -d "tests/$tier" ] || continue
  missing=()
  for pair in ${NEEDS[$tier]}; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && continue
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    if [ $updated -eq 0 ]; then apt-get update -qq; updated=1; fi
    extra=()
    [ -z "${LEAN[$tier]:-}" ] || extra=(--no-install-recommends)
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${extra[@]}" "${missing[@]}" >/dev/null; then
      continue
    fi
    echo "WERKHUB_SKIP_${tier^^}=apt-get install ${missing[*]} failed" >> "$out"
  else
    echo "WERKHUB_SKIP_${tier^^}=needs ${missing[*]} (run make test as root to install)" >> "$out"
  fi
done
# the slurm tier's accounting test (tests/slurm/test_accounting.py) also runs slurmdbd on a
# private MariaDB; only as root, and without them only that module skips, with its reason
for tier in "${tiers[@]}"; do
  [ "$tier" = slurm ] && { [ $# -gt 0 ] || [ -d tests/slurm ]; } || continue
  command -v slurmdbd >/dev/null 2>&1 && command -v mariadbd >/dev/null 2>&1 && continue
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    if [ $updated -eq 0 ]; then apt-get update -qq; updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmdbd mariadb-server >/dev/null ||
      echo "system-deps: slurmdbd mariadb-server not installed (tests/slurm/test_accounting.py skips)"
  fi
done
if [ $# -gt 0 ]; then
  sed 's/^WERKHUB_SKIP_[A-Z]*=/system-deps: not installed: /' "$out"
else
  echo "system-deps: $(wc -l < "$out") tier(s) skipped"
fi
