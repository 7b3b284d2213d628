#!/bin/sh
# Ask the daemon to split one file, with optional key=value options.
#   ./osc-separate.sh ~/Music/StemBridge/Bounces/mix.wav
#   ./osc-separate.sh "$PWD/mix.wav" quality=preview two_stems=vocals
# The file must lie in a watch folder or in paths.allowed_roots, and the path must be absolute.
# oscsend does not wait for the reply (/stembridge/queued JOB_ID PATH): run ./osc-listen.sh in
# another terminal to see queued/progress/done, or use `stembridge send`, which waits.
set -eu
DAEMON_PORT="${STEMBRIDGE_OSC_PORT:-9010}"
[ $# -ge 1 ] || { echo "usage: $0 /absolute/path/to/bounce.wav [key=value ...]" >&2; exit 2; }

# One "s" (string) type tag per argument: the path and each key=value option.
TYPES=$(printf 's%.0s' "$@")
oscsend 127.0.0.1 "$DAEMON_PORT" /stembridge/separate "$TYPES" "$@"
