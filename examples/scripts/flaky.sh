# flaky: a deploy that fails. Argument: the exit code to fail with.
code=${1:-1}
echo "==> fetching release v2.4.1"
sleep 0.5
echo "==> verifying checksum: ok"
sleep 0.5
echo "==> stopping app.service"
sleep 0.5
echo "==> migrating database"
sleep 0.5
echo "error: migration 0042_add_index failed: could not obtain lock on relation \"orders\"" >&2
echo "hint: another session holds the lock; retry when traffic is low" >&2
exit "$code"
