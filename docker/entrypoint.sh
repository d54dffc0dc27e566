#!/usr/bin/env bash
# Entrypoint of the v2v-caffe images: run the command as the owner of the mounted runs/
# folder, so that reports, snapshots and logs written there belong to the host user who
# mounted it (no root-owned files left on the host). `docker run --user UID:GID` works too
# (then this changes nothing); V2V_RUN_AS_ROOT=1 keeps root.
set -euo pipefail
RUNS=/opt/v2v/runs
if [ "$(id -u)" = 0 ] && [ "${V2V_RUN_AS_ROOT:-0}" != 1 ]; then
  uid="$(stat -c %u "$RUNS")"
  gid="$(stat -c %g "$RUNS")"
  if [ "$uid" != 0 ]; then
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
  fi
fi
exec "$@"
