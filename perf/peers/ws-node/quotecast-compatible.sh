#!/bin/sh
# Wrapper so `loadtest --spawn perf/peers/ws-node/quotecast-compatible.sh` runs the Node
# peer with the same `serve --listen 127.0.0.1:0 ...` convention as the quotecast binary.
exec node "$(dirname "$0")/server.js" "$@"
