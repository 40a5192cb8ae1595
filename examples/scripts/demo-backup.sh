# demo-backup: prints restic-style `--json` status lines, then a summary.
# Arguments: PATH SECONDS WARNINGS(true|false). Exit 0, or 3 with warnings.
path=${1:-/srv/www}
seconds=${2:-20}
warnings=${3:-false}
total_files=1842
total_bytes=3435973836
steps=$((seconds * 4))
echo "{\"message_type\":\"status\",\"seconds_elapsed\":0,\"percent_done\":0,\"total_files\":$total_files,\"files_done\":0,\"total_bytes\":$total_bytes,\"bytes_done\":0}"
i=1
while [ "$i" -le "$steps" ]; do
  sleep 0.25
  files=$((total_files * i / steps))
  bytes=$((total_bytes / steps * i))
  pct=$((i * 10000 / steps))
  pct_text=$((pct / 10000)).$(printf '%04d' $((pct % 10000)))
  left=$(( (steps - i) / 4 ))
  echo "{\"message_type\":\"status\",\"seconds_elapsed\":$((i / 4)),\"seconds_remaining\":$left,\"percent_done\":$pct_text,\"total_files\":$total_files,\"files_done\":$files,\"total_bytes\":$total_bytes,\"bytes_done\":$bytes,\"current_files\":[\"$path/file-$files.dat\"]}"
  if [ "$warnings" = "true" ] && [ "$i" -eq $((steps / 2)) ]; then
    echo "{\"message_type\":\"error\",\"error\":{\"message\":\"open $path/private.key: permission denied\"},\"during\":\"archival\",\"item\":\"$path/private.key\"}" >&2
  fi
  i=$((i + 1))
done
echo "{\"message_type\":\"summary\",\"files_new\":$total_files,\"files_changed\":0,\"files_unmodified\":0,\"data_added\":$total_bytes,\"total_files_processed\":$total_files,\"total_bytes_processed\":$total_bytes,\"total_duration\":$seconds,\"snapshot_id\":\"5f3c2a91\"}"
if [ "$warnings" = "true" ]; then
  echo "Warning: at least one source file could not be read" >&2
  exit 3
fi
exit 0
