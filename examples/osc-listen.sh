#!/bin/sh
# Print every StemBridge notification (queued, progress, done, error) as it happens.
# Needs liblo's tools: apt install liblo-tools / brew install liblo.
#   ./osc-listen.sh            # listen on UDP 9011, daemon on 127.0.0.1:9010
#   ./osc-listen.sh 9020 9010  # listen port, daemon port
set -eu
LISTEN_PORT="${1:-9011}"
DAEMON_PORT="${2:-9010}"

oscdump -L "$LISTEN_PORT" &
DUMP_PID=$!
trap 'oscsend 127.0.0.1 "$DAEMON_PORT" /stembridge/unsubscribe i "$LISTEN_PORT" 2>/dev/null; kill "$DUMP_PID"' EXIT INT TERM

# Notifications for every job (watched-folder jobs included) now go to 127.0.0.1:LISTEN_PORT.
oscsend 127.0.0.1 "$DAEMON_PORT" /stembridge/subscribe i "$LISTEN_PORT"
wait "$DUMP_PID"
