# restic-backup: backs up every PATH argument that exists with
# `restic backup --json` (its status lines feed the job's progress bar).
# Arguments: PATH [PATH…], each one argv element (never split, never seen by
# a shell as text). Exit codes are restic's: 0 done, 1 nothing backed up,
# 3 done but some source could not be read ("succeeded with warnings").
#
# N.B.: a PATH that does not exist is skipped with a warning on stderr and
# the job ends with exit code 3. restic >= 0.17 does this by itself; Debian
# 12's restic 0.14 skips such a path and exits 0, and a nightly backup that
# silently lost one of its sources must not look like a clean one.
missing=0
for p in "$@"; do
  shift
  if [ -e "$p" ]; then
    set -- "$@" "$p"
  else
    echo "warning: $p does not exist, skipping" >&2
    missing=1
  fi
done
if [ "$#" -eq 0 ]; then
  echo "error: none of the paths to back up exists" >&2
  exit 1
fi
restic backup --json "$@"
rc=$?
if [ "$rc" -eq 0 ] && [ "$missing" -eq 1 ]; then
  echo "Warning: at least one source path does not exist" >&2
  exit 3
fi
exit "$rc"
