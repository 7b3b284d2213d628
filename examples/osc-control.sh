#!/bin/sh
# Other requests, one per line. Replies go back to the sender's port, which oscsend closes at
# once, so pair these with ./osc-listen.sh (subscribed) or use `stembridge send`, which waits:
#   stembridge send /stembridge/ping
#   stembridge send /stembridge/status
set -eu
PORT="${STEMBRIDGE_OSC_PORT:-9010}"
case "${1:-}" in
  ping)   oscsend 127.0.0.1 "$PORT" /stembridge/ping ;;
  status) if [ $# -ge 2 ]; then oscsend 127.0.0.1 "$PORT" /stembridge/status s "$2"; else oscsend 127.0.0.1 "$PORT" /stembridge/status; fi ;;
  cancel) oscsend 127.0.0.1 "$PORT" /stembridge/cancel s "$2" ;;
  *) echo "usage: $0 ping | status [JOB_ID] | cancel JOB_ID" >&2; exit 2 ;;
esac
