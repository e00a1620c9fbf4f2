# Sourced by ci/clients: start `kvio serve` on loopback with
# port 0, learn its addresses from its start-up lines, stop it by PID with
# SIGTERM and check it exits 0. Every wait is bounded.
#
#   serve_start NAME FLAVOR [ARGS...]   sets SERVE_ADDR[NAME], SERVE_RESP[NAME],
#                                       SERVE_MEMCACHE[NAME] (when asked) and SERVE_PID[NAME]
#   serve_stop NAME                     SIGTERM, wait for the `stopped` line and exit 0
#   serve_cleanup                       SIGKILL what is still running (for an EXIT trap)
#
# Needs SERVE_BIN (the kvio binary) and SERVE_WORK (a scratch directory).
# The server's stdout is a FIFO read with `read -t`: its lines are awaited,
# not polled for. Its stderr goes to $SERVE_WORK/NAME.stderr.

declare -A SERVE_PID=() SERVE_FD=() SERVE_ADDR=() SERVE_RESP=() SERVE_MEMCACHE=()
SERVE_LINE_TIMEOUT=${SERVE_LINE_TIMEOUT:-10}

serve_fail() { # name message
    echo "FAIL kvio serve ($1): $2" >&2
    if [ -s "$SERVE_WORK/$1.stderr" ]; then tail -20 "$SERVE_WORK/$1.stderr" | sed 's/^/    /' >&2; fi
    return 1
}

serve_start() { # name flavor [args...]
    local name=$1 flavor=$2 fifo line fd want=0 arg
    shift 2
    for arg in "$@"; do case "$arg" in --resp | --memcache) want=$((want + 1)) ;; esac; done
    fifo="$SERVE_WORK/$name.stdout"
    rm -f "$fifo"
    mkfifo "$fifo"
    "$SERVE_BIN" serve --flavor "$flavor" --addr 127.0.0.1:0 "$@" >"$fifo" 2>"$SERVE_WORK/$name.stderr" &
    SERVE_PID[$name]=$!
    exec {fd}<"$fifo"
    SERVE_FD[$name]=$fd
    read -r -t "$SERVE_LINE_TIMEOUT" -u "$fd" line || { serve_fail "$name" "no start-up line"; return 1; }
    SERVE_ADDR[$name]=$(tr ' ' '\n' <<<"$line" | sed -n 's/^addr=//p')
    while [ "$want" -gt 0 ]; do
        read -r -t "$SERVE_LINE_TIMEOUT" -u "$fd" line || { serve_fail "$name" "no listener line"; return 1; }
        case "$line" in
            "kvio serve: resp="*) SERVE_RESP[$name]=${line#kvio serve: resp=}; want=$((want - 1)) ;;
            "kvio serve: memcache="*) SERVE_MEMCACHE[$name]=${line#kvio serve: memcache=}; want=$((want - 1)) ;;
        esac
    done
    echo "kvio serve --flavor $flavor $* (pid ${SERVE_PID[$name]}): kvio=${SERVE_ADDR[$name]} resp=${SERVE_RESP[$name]:-} memcache=${SERVE_MEMCACHE[$name]:-}"
}

serve_stop() { # name
    local name=$1 pid=${SERVE_PID[$1]} fd=${SERVE_FD[$1]} line stopped="" status
    kill -TERM "$pid"
    # Its stdout ends when it exits; the last line says what it served.
    while read -r -t "$SERVE_LINE_TIMEOUT" -u "$fd" line; do
        case "$line" in "kvio serve: stopped "*) stopped=$line ;; esac
    done
    if kill -0 "$pid" 2>/dev/null && ! timeout "$SERVE_LINE_TIMEOUT" tail --pid="$pid" -f /dev/null; then
        serve_fail "$name" "still running ${SERVE_LINE_TIMEOUT}s after SIGTERM"
        return 1
    fi
    status=0
    wait "$pid" || status=$?
    exec {fd}<&-
    unset "SERVE_PID[$name]"
    [ "$status" = 0 ] || { serve_fail "$name" "exit status $status after SIGTERM"; return 1; }
    [ -n "$stopped" ] || { serve_fail "$name" "no 'kvio serve: stopped' line"; return 1; }
    echo "$stopped (exit 0 after SIGTERM)"
}

serve_cleanup() {
    local name
    for name in "${!SERVE_PID[@]}"; do kill -KILL "${SERVE_PID[$name]}" 2>/dev/null || true; done
}
