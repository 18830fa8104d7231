#!/usr/bin/env bash
# Start, stop or inspect the servers Orderpush runs against: Redis and a
# single-node Apache Kafka (KRaft), both on 127.0.0.1 only.
#
#   scripts/services.sh start    # install what is missing, start, wait, create topics
#   scripts/services.sh stop     # stop what this script started, wipe Kafka's data
#   scripts/services.sh status   # does each answer?
#   scripts/services.sh start kafka   # only Kafka (or only redis); default: both
#
# Redis comes from Debian's redis-server; a Redis already answering PING on
# the port is reused. Kafka's jars come from Maven Central through Maven
# (scripts/kafka/pom.xml) into a cache folder reused by later starts.
#
# Environment (all optional):
#   ORDERPUSH_RUN_DIR        pidfiles, logs, configs, Kafka data (/tmp/orderpush-services)
#   ORDERPUSH_KAFKA_CACHE    Kafka jars (~/.cache/orderpush/kafka-3.9.1)
#   ORDERPUSH_REDIS_PORT     6379
#   ORDERPUSH_KAFKA_PORT     9092 (controller listener: ORDERPUSH_KAFKA_CONTROLLER_PORT, 9093)
#   ORDERPUSH_KAFKA_HEAP     JVM heap flags (-Xms256m -Xmx512m)
#   ORDERPUSH_KAFKA_KEEP_DATA  1: 'start' reuses an already formatted data dir and
#                            'stop' keeps it, so a broker restarts with its topics,
#                            records and offsets (fault tests; default 0: fresh cluster)
#   ORDERPUSH_START_TIMEOUT  seconds to wait for both to answer (90)
#   ORDERPUSH_TOPICS         topics to create (payments,orders,inventory,billing,delivery,deadletter)
#   ORDERPUSH_TOPIC_PARTITIONS  4
#   ORDERPUSH_PYTHON or PYTHON  interpreter with aiokafka for the Kafka checks
#                            (default: the repo's .venv/bin/python if present, else python3;
#                            aiokafka is pip-installed into it when missing)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_SRC="$SCRIPT_DIR/kafka"

KAFKA_VERSION=3.9.1
RUN_DIR="${ORDERPUSH_RUN_DIR:-/tmp/orderpush-services}"
KAFKA_CACHE="${ORDERPUSH_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/orderpush/kafka-$KAFKA_VERSION}"
REDIS_HOST=127.0.0.1
REDIS_PORT="${ORDERPUSH_REDIS_PORT:-6379}"
KAFKA_HOST=127.0.0.1
KAFKA_PORT="${ORDERPUSH_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${ORDERPUSH_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${ORDERPUSH_KAFKA_HEAP:--Xms256m -Xmx512m}"
KAFKA_KEEP_DATA="${ORDERPUSH_KAFKA_KEEP_DATA:-0}"
START_TIMEOUT="${ORDERPUSH_START_TIMEOUT:-90}"
TOPICS="${ORDERPUSH_TOPICS:-payments,orders,inventory,billing,delivery,deadletter}"
TOPIC_PARTITIONS="${ORDERPUSH_TOPIC_PARTITIONS:-4}"
PYTHON="${ORDERPUSH_PYTHON:-${PYTHON:-}}"
if [ -z "$PYTHON" ]; then
    if [ -x "$SCRIPT_DIR/../.venv/bin/python" ]; then PYTHON="$SCRIPT_DIR/../.venv/bin/python"; else PYTHON=python3; fi
fi

REDIS_DIR="$RUN_DIR/redis"
REDIS_PID="$RUN_DIR/redis.pid"
REDIS_LOG="$RUN_DIR/redis.log"
KAFKA_DIR="$RUN_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_CONF="$KAFKA_DIR/config"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PID="$RUN_DIR/kafka.pid"
KAFKA_OUT="$KAFKA_LOGS/kafka.out"
BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"

say() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- helpers

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else die "need root to run: $*"; fi
}

APT_UPDATED=0
# apt_install PACKAGE... : install Debian packages without starting their services.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    say "installing Debian package(s): $*"
    local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    # Keep Debian's own init script from starting e.g. a persistent redis-server
    # on our port: this script runs the servers itself.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && added_policy=1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || warn "apt-get update failed"
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    [ "$added_policy" -eq 1 ] && as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

# pid_alive PIDFILE PATTERN : prints the pid if the pidfile names a live
# process whose command line contains PATTERN (guards against pid reuse).
pid_alive() {
    local file="$1" pattern="$2" pid
    [ -s "$file" ] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
    echo "$pid"
}

# proc_running PID : alive and not a zombie (a daemon's parent is init, which
# may reap it late; kill -0 succeeds on a zombie).
proc_running() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

who_listens() {
    command -v ss >/dev/null 2>&1 && ss -ltnpH "sport = :$1" 2>/dev/null | awk '{print $NF}' | head -1
}

redis_ping() {
    # PING over bash's /dev/tcp: needs neither redis-cli nor a client library.
    local reply
    reply="$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r line <&3 && printf "%s" "$line"' "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null)" || return 1
    [ "${reply%$'\r'}" = "+PONG" ]
}

have_aiokafka() { "$PYTHON" -c 'import aiokafka' >/dev/null 2>&1; }

ensure_aiokafka() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (needed for the Kafka readiness check); set PYTHON="
    have_aiokafka && return 0
    say "aiokafka missing for $PYTHON: pip installing it"
    "$PYTHON" -m pip install -q aiokafka || die "'$PYTHON -m pip install aiokafka' failed"
    have_aiokafka || die "aiokafka still not importable by $PYTHON after pip install"
}

kafka_check() {  # quick probe: does a Kafka broker answer metadata requests?
    if have_aiokafka; then
        "$PYTHON" "$KAFKA_SRC/kafka_ready.py" --bootstrap "$BOOTSTRAP" --check --timeout "${1:-5}" >/dev/null 2>&1
    else
        port_open "$KAFKA_HOST" "$KAFKA_PORT"
    fi
}

# ---------------------------------------------------------------- redis

start_redis() {
    local pid
    if pid="$(pid_alive "$REDIS_PID" redis-server)"; then
        say "redis: already running (pid $pid) on $REDIS_HOST:$REDIS_PORT"
        return 0
    fi
    if redis_ping; then
        say "redis: something already answers PING on $REDIS_HOST:$REDIS_PORT: reusing it (not started here, 'stop' leaves it alone)"
        return 0
    fi
    if port_open "$REDIS_HOST" "$REDIS_PORT"; then
        die "redis: port $REDIS_PORT is taken by something that does not answer PING ($(who_listens "$REDIS_PORT"))"
    fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    command -v redis-server >/dev/null 2>&1 || die "redis: redis-server still missing after installing Debian's redis-server"
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PID"
    redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --protected-mode yes \
        --daemonize yes --supervised no \
        --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" \
        --save '' --appendonly no \
        </dev/null >/dev/null 2>&1 \
        || die "redis: redis-server failed to start; see $REDIS_LOG: $(tail -n 5 "$REDIS_LOG" 2>/dev/null)"
    say "redis: started on $REDIS_HOST:$REDIS_PORT (log $REDIS_LOG)"
}

stop_redis() {
    local pid
    if pid="$(pid_alive "$REDIS_PID" redis-server)"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_exit "$pid" 10 redis
    else
        redis_ping && say "redis: one answers on $REDIS_PORT but was not started by this script: left alone"
    fi
    rm -f "$REDIS_PID"
    rm -rf "$REDIS_DIR"
}

# ---------------------------------------------------------------- kafka

ensure_java() {
    if ! command -v java >/dev/null 2>&1; then
        apt_install openjdk-17-jre-headless
    fi
    local major
    major="$(java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }')"
    [ -n "$major" ] && [ "$major" -ge 11 ] || die "kafka: Java 11+ is needed, found: $(java -version 2>&1 | head -1)"
}

# The jar cache is valid when it holds a stamp naming the pom it was made from.
kafka_cache_stamp() { sha256sum "$KAFKA_SRC/pom.xml" | cut -c1-16; }

ensure_kafka_jars() {
    local stamp="$KAFKA_CACHE/.orderpush-complete" want
    want="$(kafka_cache_stamp)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$KAFKA_CACHE/kafka_2.13-$KAFKA_VERSION.jar" ]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || apt_install maven
    command -v mvn >/dev/null 2>&1 || die "kafka: mvn still missing after installing Debian's maven"
    local t0 tmp log
    t0="$(now)"
    say "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_CACHE"
    mkdir -p "$(dirname "$KAFKA_CACHE")"
    tmp="$KAFKA_CACHE.partial.$$"
    log="$(dirname "$KAFKA_CACHE")/mvn-kafka.log"
    rm -rf "$tmp"
    if ! mvn -B -q -f "$KAFKA_SRC/pom.xml" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" -DincludeScope=runtime >"$log" 2>&1; then
        rm -rf "$tmp"
        die "kafka: 'mvn dependency:copy-dependencies' for scripts/kafka/pom.xml failed; see $log:
$(tail -n 20 "$log")"
    fi
    [ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka: Maven ran but kafka_2.13-$KAFKA_VERSION.jar is not in $tmp"
    echo "$want" >"$tmp/.orderpush-complete"
    rm -rf "$KAFKA_CACHE"
    mv "$tmp" "$KAFKA_CACHE"
    say "kafka: $(find "$KAFKA_CACHE" -name '*.jar' | wc -l) jars fetched in $(elapsed "$t0")s"
}

render() {  # render TEMPLATE OUT
    sed -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@DATA_DIR@|$KAFKA_DATA|g" -e "s|@LOG_DIR@|$KAFKA_LOGS|g" \
        -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" "$1" >"$2"
}

# kafka_cmd MAINCLASS ARGS... : sets KCMD to the java command line running
# MAINCLASS from the cached jars.
kafka_cmd() {
    local heap
    read -r -a heap <<<"$KAFKA_HEAP"
    KCMD=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true -Dlog4j.configuration="file:$KAFKA_CONF/log4j.properties"
        -Dkafka.logs.dir="$KAFKA_LOGS" -cp "$KAFKA_CACHE/*" "$@")
}

new_cluster_id() {  # 16 random bytes, base64url without padding, not starting with '-'
    local id
    while :; do
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [ "${id#-}" = "$id" ] && { echo "$id"; return; }
    done
}

start_kafka() {
    local pid
    if pid="$(pid_alive "$KAFKA_PID" kafka.Kafka)"; then
        say "kafka: already running (pid $pid) on $BOOTSTRAP"
        return 0
    fi
    rm -f "$KAFKA_PID"
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        if kafka_check 10; then
            say "kafka: a broker already answers on $BOOTSTRAP: reusing it (not started here, 'stop' leaves it alone)"
            return 0
        fi
        die "kafka: port $KAFKA_PORT is taken by something that is not a Kafka broker ($(who_listens "$KAFKA_PORT"))"
    fi
    port_open "$KAFKA_HOST" "$CONTROLLER_PORT" \
        && die "kafka: controller port $CONTROLLER_PORT is taken ($(who_listens "$CONTROLLER_PORT")); set ORDERPUSH_KAFKA_CONTROLLER_PORT"

    ensure_java
    ensure_kafka_jars
    mkdir -p "$KAFKA_CONF" "$KAFKA_LOGS"
    if [ -f "$KAFKA_LOGS/server.log" ]; then mv -f "$KAFKA_LOGS/server.log" "$KAFKA_LOGS/server.log.previous"; fi
    render "$KAFKA_SRC/server.properties.in" "$KAFKA_CONF/server.properties"
    render "$KAFKA_SRC/log4j.properties.in" "$KAFKA_CONF/log4j.properties"

    if [ "$KAFKA_KEEP_DATA" = 1 ] && [ -f "$KAFKA_DATA/meta.properties" ]; then
        # Asked to keep the data: restart the same cluster. (The new broker
        # waits out the old one's session, ~9 s, before it may register again.)
        say "kafka: reusing the data in $KAFKA_DATA (ORDERPUSH_KAFKA_KEEP_DATA=1)"
    else
        # No broker of ours is running: start a fresh, empty cluster. (Reusing
        # the data of a broker that died would also make the new one wait out
        # the old one's session, ~9 s, before it may register again.)
        rm -rf "$KAFKA_DATA"
        mkdir -p "$KAFKA_DATA"
        local fmt_log="$KAFKA_LOGS/storage-format.log"
        kafka_cmd kafka.tools.StorageTool format -t "$(new_cluster_id)" -c "$KAFKA_CONF/server.properties"
        "${KCMD[@]}" >"$fmt_log" 2>&1 || die "kafka: formatting storage (kafka.tools.StorageTool) failed; see $fmt_log:
$(tail -n 20 "$fmt_log")"
    fi

    # Detached (own session, SIGHUP ignored, stdin from /dev/null, output to a
    # file): the broker outlives this script and the make that ran it. The
    # subshell writes its own pid, then execs the JVM, so the pidfile names the
    # JVM (setsid only forks when its caller leads a process group: skipped then).
    kafka_cmd kafka.Kafka "$KAFKA_CONF/server.properties"
    (
        trap '' HUP
        echo "$BASHPID" >"$KAFKA_PID"
        if [ "$(awk '{ print $5 }' "/proc/$BASHPID/stat")" = "$BASHPID" ]; then
            exec "${KCMD[@]}"
        fi
        exec setsid "${KCMD[@]}"
    ) </dev/null >"$KAFKA_OUT" 2>&1 &
    disown "$!" 2>/dev/null || true
    for _ in $(seq 50); do [ -s "$KAFKA_PID" ] && break; sleep 0.1; done
    say "kafka: starting $KAFKA_VERSION (pid $(cat "$KAFKA_PID" 2>/dev/null)) on $BOOTSTRAP (logs $KAFKA_LOGS)"
}

kafka_failed() {
    die "kafka: $1
--- $KAFKA_LOGS/server.log (last lines) ---
$(tail -n 25 "$KAFKA_LOGS/server.log" 2>/dev/null)
--- $KAFKA_OUT ---
$(tail -n 15 "$KAFKA_OUT" 2>/dev/null)"
}

wait_redis() {  # wait_redis T0 DEADLINE
    until redis_ping; do
        [ "$(date +%s)" -lt "$2" ] || die "redis: no PONG on $REDIS_HOST:$REDIS_PORT after ${START_TIMEOUT}s; see $REDIS_LOG"
        sleep 0.1
    done
    say "redis: answers PING ($(elapsed "$1")s)"
}

wait_kafka() {  # wait_kafka T0 DEADLINE
    local t0="$1" deadline="$2"
    # Watch the broker process while the readiness check waits for it.
    local left ready_log="$KAFKA_LOGS/ready.log" rc=0 kpid=""
    left=$(( deadline - $(date +%s) )); [ "$left" -gt 5 ] || left=5
    kpid="$(pid_alive "$KAFKA_PID" kafka.Kafka || true)"
    mkdir -p "$KAFKA_LOGS"
    "$PYTHON" "$KAFKA_SRC/kafka_ready.py" --bootstrap "$BOOTSTRAP" --timeout "$left" \
        --topics "$TOPICS" --partitions "$TOPIC_PARTITIONS" --warm >"$ready_log" 2>&1 &
    local checker=$!
    while kill -0 "$checker" 2>/dev/null; do
        if [ -n "$kpid" ] && ! proc_running "$kpid"; then
            kill "$checker" 2>/dev/null || true
            wait "$checker" 2>/dev/null || true
            rm -f "$KAFKA_PID"
            kafka_failed "the broker exited during startup"
        fi
        sleep 0.2
    done
    wait "$checker" || rc=$?
    sed 's/^/[services] /' "$ready_log"
    [ "$rc" -eq 0 ] || kafka_failed "not ready after ${START_TIMEOUT}s (kafka_ready.py exit $rc)"
    say "kafka: answers on $BOOTSTRAP, topics ready: $TOPICS ($(elapsed "$t0")s)"
}

wait_exit() {  # wait_exit PID SECONDS NAME : SIGKILL after SECONDS
    local pid="$1" secs="$2" name="$3"
    for _ in $(seq $((secs * 10))); do
        proc_running "$pid" || { say "$name: stopped (pid $pid)"; return 0; }
        sleep 0.1
    done
    warn "$name: pid $pid still running after ${secs}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do proc_running "$pid" || return 0; sleep 0.1; done
    die "$name: pid $pid did not exit"
}

stop_kafka() {
    local pid
    if pid="$(pid_alive "$KAFKA_PID" kafka.Kafka)"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_exit "$pid" 20 kafka
    elif port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        say "kafka: something answers on $BOOTSTRAP but was not started by this script: left alone"
    fi
    rm -f "$KAFKA_PID"
    # The next start formats a fresh, empty cluster, unless told to keep it.
    [ "$KAFKA_KEEP_DATA" = 1 ] || rm -rf "$KAFKA_DATA"
}

# ---------------------------------------------------------------- commands

# Which servers a command acts on: the arguments after it (redis, kafka), else both.
WITH_REDIS=1
WITH_KAFKA=1
select_services() {
    [ "$#" -gt 0 ] || return 0
    WITH_REDIS=0
    WITH_KAFKA=0
    local name
    for name in "$@"; do
        case "$name" in
            redis) WITH_REDIS=1 ;;
            kafka) WITH_KAFKA=1 ;;
            *) echo "unknown service '$name' (expected: redis, kafka)" >&2; exit 2 ;;
        esac
    done
}

cmd_start() {
    local t0 deadline started=""
    t0="$(now)"
    mkdir -p "$RUN_DIR"
    [ "$WITH_REDIS" -eq 0 ] || start_redis
    if [ "$WITH_KAFKA" -eq 1 ]; then
        start_kafka
        ensure_aiokafka
    fi
    deadline=$(( $(date +%s) + START_TIMEOUT ))
    if [ "$WITH_REDIS" -eq 1 ]; then
        wait_redis "$t0" "$deadline"
        started="redis://$REDIS_HOST:$REDIS_PORT"
    fi
    if [ "$WITH_KAFKA" -eq 1 ]; then
        wait_kafka "$t0" "$deadline"
        started="${started:+$started  }kafka $BOOTSTRAP"
    fi
    say "started in $(elapsed "$t0")s: $started  (run dir $RUN_DIR)"
}

cmd_stop() {
    local t0
    t0="$(now)"
    [ "$WITH_KAFKA" -eq 0 ] || stop_kafka
    [ "$WITH_REDIS" -eq 0 ] || stop_redis
    say "stopped in $(elapsed "$t0")s"
}

cmd_status() {
    local rc=0 pid
    if [ "$WITH_REDIS" -eq 0 ]; then
        :
    elif redis_ping; then
        pid="$(pid_alive "$REDIS_PID" redis-server || true)"
        say "redis: answers PING on $REDIS_HOST:$REDIS_PORT${pid:+ (pid $pid, started here)}"
    else
        say "redis: NOT answering on $REDIS_HOST:$REDIS_PORT"; rc=1
    fi
    if [ "$WITH_KAFKA" -eq 0 ]; then
        :
    elif kafka_check 5; then
        pid="$(pid_alive "$KAFKA_PID" kafka.Kafka || true)"
        say "kafka: answers on $BOOTSTRAP${pid:+ (pid $pid, started here)}"
    else
        pid="$(pid_alive "$KAFKA_PID" kafka.Kafka || true)"
        say "kafka: NOT answering on $BOOTSTRAP${pid:+ (pid $pid is running: still starting?)}"; rc=1
    fi
    return "$rc"
}

COMMAND="${1:-}"
[ "$#" -eq 0 ] || shift
select_services "$@"
case "$COMMAND" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) echo "usage: $0 {start|stop|status|restart} [redis] [kafka]" >&2; exit 2 ;;
esac
