# shellcheck shell=bash
# scripts/testenv.sh: a private Docker engine in swarm mode, two loopback registries and a
# private PostgreSQL cluster for hoist's tests.
#
# Source it, then call `testenv_up` / `testenv_down`:
#   . scripts/testenv.sh && testenv_up && cargo test --test swarm; testenv_down
# testenv_up exports HOIST_TEST_DOCKER_HOST, HOIST_TEST_REGISTRY (anonymous),
# HOIST_TEST_AUTH_REGISTRY, HOIST_TEST_REGISTRY_USER, HOIST_TEST_REGISTRY_PASSWORD,
# HOIST_TEST_POSTGRES_URL (a superuser on the `postgres` database; tests create
# their own databases), HOIST_TEST_POSTGRES_CA (the CA of the cluster's TLS
# certificate; client.crt and client.key beside it are the certificate by which the
# cluster admits the role hoist_cert) and writes them to $HOIST_TEST_STATE/env (default
# ./.hoist-test/env) for `source`.
# The engine never touches the machine's own Docker: its own data root, exec
# root, socket, no bridge and no iptables. The tests build and push their
# images themselves (tests/swarm_support), from the static busybox on this machine.
# Both functions are idempotent; logs go to the state dir.

_testenv_state() {
    printf '%s' "${HOIST_TEST_STATE:-$PWD/.hoist-test}"
}

_testenv_log() {
    printf 'testenv: %s\n' "$*" >&2
}

# A TCP port on 127.0.0.1 that nobody listens on now.
_testenv_free_port() {
    local port i
    for i in $(seq 1 200); do
        port=$((20000 + RANDOM % 20000))
        # No pipelines here: callers may run with `set -o pipefail`.
        if [ -z "$(ss -Htanl "sport = :$port" 2>/dev/null)" ] \
            && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s' "$port"
            return 0
        fi
    done
    _testenv_log "no free port found"
    return 1
}

# Waits until "$@" succeeds, at most $1 tenths of a second.
_testenv_wait() {
    local tenths=$1
    shift
    local i
    for ((i = 0; i < tenths; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

_testenv_install() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
    command -v ss >/dev/null 2>&1 || missing+=(iproute2)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # The dashboard test (tests/dashboard.rs) reads the page through headless Chromium.
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    if ! _testenv_busybox_is_static; then
        missing+=(busybox-static)
    fi
    _testenv_pg_bin >/dev/null 2>&1 || missing+=(postgresql)
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        _testenv_log "missing ${missing[*]} and not root: install them first"
        return 1
    fi
    _testenv_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

_testenv_busybox_is_static() {
    [ -x /bin/busybox ] || return 1
    # A dynamically linked busybox cannot run FROM scratch; busybox-static's can.
    ! grep -aq '/lib[0-9a-z_/-]*/ld-linux' /bin/busybox
}

_testenv_docker() {
    local state
    state=$(_testenv_state)
    docker -H "$(cat "$state/docker_host")" "$@"
}

_testenv_start_dockerd() {
    local state=$1 short
    if [ -f "$state/short_dir" ] && [ -d "$(cat "$state/short_dir")" ]; then
        short=$(cat "$state/short_dir")
    else
        # exec-root holds containerd's and the engine's sockets: its path must stay short.
        short=$(mktemp -d /tmp/hoist-dk-XXXX)
        printf '%s' "$short" >"$state/short_dir"
    fi
    local host="unix://$short/docker.sock"
    printf '%s' "$host" >"$state/docker_host"
    if [ -f "$state/docker.pid" ] && kill -0 "$(cat "$state/docker.pid")" 2>/dev/null \
        && docker -H "$host" version >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$state/data"
    dockerd --bridge=none --iptables=false --ip-masq=false --ip6tables=false \
        --data-root "$state/data" --exec-root "$short/exec" --pidfile "$state/docker.pid" \
        --host "$host" >>"$state/dockerd.log" 2>&1 &
    printf '%s' "$!" >"$state/docker.pid.launch"
    if ! _testenv_wait 600 docker -H "$host" version; then
        _testenv_log "dockerd did not come up; see $state/dockerd.log"
        tail -n 20 "$state/dockerd.log" >&2
        return 1
    fi
}

_testenv_swarm_init() {
    local state=$1
    local active
    active=$(_testenv_docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)  || true
    if [ "$active" = "active" ]; then
        return 0
    fi
    local port data_port
    port=$(_testenv_free_port) || return 1
    data_port=$(_testenv_free_port) || return 1
    _testenv_docker swarm init --advertise-addr "127.0.0.1:$port" --listen-addr "127.0.0.1:$port" \
        --data-path-port "$data_port" >>"$state/swarm-init.log" 2>&1 || {
        _testenv_log "docker swarm init failed; see $state/swarm-init.log"
        tail -n 5 "$state/swarm-init.log" >&2
        return 1
    }
}

# _testenv_start_registry NAME [htpasswd-file]; prints host:port.
_testenv_start_registry() {
    local state=$1 name=$2 htpasswd=${3:-}
    local dir="$state/$name"
    mkdir -p "$dir/storage"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && [ -f "$dir/addr" ]; then
        cat "$dir/addr"
        return 0
    fi
    local port
    port=$(_testenv_free_port) || return 1
    {
        printf 'version: 0.1\n'
        printf 'log:\n  level: warn\n  accesslog:\n    disabled: true\n'
        printf 'storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$dir/storage"
        printf 'http:\n  addr: 127.0.0.1:%s\n' "$port"
        if [ -n "$htpasswd" ]; then
            printf 'auth:\n  htpasswd:\n    realm: hoist-test\n    path: %s\n' "$htpasswd"
        fi
    } >"$dir/config.yml"
    docker-registry serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 &
    printf '%s' "$!" >"$dir/pid"
    printf '127.0.0.1:%s' "$port" >"$dir/addr"
    if ! _testenv_wait 100 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"; then
        _testenv_log "registry $name did not come up; see $dir/registry.log"
        return 1
    fi
    cat "$dir/addr"
}

# The newest installed PostgreSQL's bin directory (Debian keeps them out of PATH).
_testenv_pg_bin() {
    local dir version best="" best_version=0
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] || continue
        # Version directories: 9.6 < 10 < 15, so compare major numbers, not text.
        version=${dir%/bin}
        version=${version##*/}
        version=${version%%.*}
        if [ "$version" -gt "$best_version" ]; then
            best=$dir
            best_version=$version
        fi
    done
    [ -n "$best" ] || return 1
    printf '%s' "$best"
}

# Runs a PostgreSQL binary; as root, as the postgres user (PostgreSQL refuses to run as root).
_testenv_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# _testenv_start_postgres STATE; prints the superuser's URL.
# A private cluster under STATE/pg: loopback TCP only, its unix socket inside STATE/pg,
# password (scram) authentication, so the URL the tests get is the kind users write.
# The test cluster's TLS files, those missing: a CA of its own and a server certificate
# for 127.0.0.1 (tests connect with sslmode=verify-full and sslrootcert=ca.crt, as users
# with a private CA would), and a client certificate for the role hoist_cert, which the
# cluster admits by that certificate alone.
_testenv_pg_certs() {
    local dir=$1
    (
        cd "$dir" || exit 1
        if [ ! -f server.crt ]; then
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hoist test CA" \
                -keyout ca.key -out ca.crt &&
                openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
                    -keyout server.key -out server.csr &&
                printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext &&
                openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                    -days 3650 -extfile server.ext -out server.crt &&
                chmod 600 server.key ca.key || exit 1
        fi
        if [ ! -f client.crt ]; then
            openssl req -newkey rsa:2048 -nodes -subj "/CN=hoist_cert" \
                -keyout client.key -out client.csr &&
                printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext &&
                openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                    -days 3650 -extfile client.ext -out client.crt &&
                chmod 600 client.key || exit 1
        fi
    ) >>"$dir/openssl.log" 2>&1 || {
        _testenv_log "cannot make the PostgreSQL test certificates; see $dir/openssl.log"
        return 1
    }
}

_testenv_start_postgres() {
    local state=$1
    local dir="$state/pg" bin
    bin=$(_testenv_pg_bin) || {
        _testenv_log "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)"
        return 1
    }
    local user=hoist password port
    mkdir -p "$dir/sock" || return 1
    if [ -f "$dir/password" ]; then
        password=$(cat "$dir/password")
    else
        # Letters and digits only: the password goes into a URL unescaped.
        password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
        (umask 077 && printf '%s\n' "$password" >"$dir/password")
    fi
    _testenv_pg_certs "$dir" || return 1
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres: "$dir" || return 1
        if ! runuser -u postgres -- test -w "$dir"; then
            _testenv_log "the postgres user cannot reach $dir: make the directories above it searchable"
            return 1
        fi
    fi
    if [ -f "$dir/port" ] && _testenv_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 \
        && _testenv_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$dir/port")"; then
        printf 'postgres://%s:%s@127.0.0.1:%s/postgres' "$user" "$password" "$(cat "$dir/port")"
        return 0
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir/data"
        _testenv_pg "$bin/initdb" -D "$dir/data" -U "$user" --pwfile="$dir/password" \
            --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --no-locale \
            >>"$dir/initdb.log" 2>&1 || {
            _testenv_log "initdb failed; see $dir/initdb.log"
            tail -n 5 "$dir/initdb.log" >&2
            return 1
        }
    fi
    # hoist_cert connects with its client certificate alone (checked against ssl_ca_file).
    if ! grep -q '^hostssl all hoist_cert ' "$dir/data/pg_hba.conf"; then
        sed -i '1i hostssl all hoist_cert 127.0.0.1/32 cert' "$dir/data/pg_hba.conf" || return 1
    fi
    port=$(_testenv_free_port) || return 1
    # max_connections: every test store is a pool, and tests run two at a time.
    _testenv_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir/sock' -c max_connections=300 -c ssl=on -c ssl_cert_file='$dir/server.crt' -c ssl_key_file='$dir/server.key' -c ssl_ca_file='$dir/ca.crt'" \
        start >>"$dir/pg_ctl.log" 2>&1 || {
        _testenv_log "PostgreSQL did not start; see $dir/postgres.log"
        tail -n 10 "$dir/postgres.log" >&2
        return 1
    }
    printf '%s' "$port" >"$dir/port"
    printf 'postgres://%s:%s@127.0.0.1:%s/postgres' "$user" "$password" "$port"
}

_testenv_stop_postgres() {
    local state=$1
    local dir="$state/pg" bin
    [ -f "$dir/data/postmaster.pid" ] || return 0
    bin=$(_testenv_pg_bin) || return 0
    _testenv_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >>"$dir/pg_ctl.log" 2>&1 || true
    rm -f "$dir/port"
}

testenv_up() {
    local state
    state=$(_testenv_state)
    mkdir -p "$state" || return 1
    state=$(cd "$state" && pwd)
    _testenv_install || return 1
    _testenv_start_dockerd "$state" || return 1
    _testenv_swarm_init "$state" || return 1

    local user=hoist password
    if [ -f "$state/registry_password" ]; then
        password=$(cat "$state/registry_password")
    else
        # Characters like ?, > and ~ make the auth header's standard base64 carry + and /,
        # which is what exercises the base64url re-encoding of X-Registry-Auth.
        password="$(head -c 18 /dev/urandom | base64 | tr -d '\n=' | tr '+/' '?~')>?~"
        printf '%s' "$password" >"$state/registry_password"
        chmod 600 "$state/registry_password"
    fi
    htpasswd -Bbc "$state/htpasswd" "$user" "$password" >/dev/null 2>&1 || {
        _testenv_log "htpasswd failed"
        return 1
    }

    local anon auth
    anon=$(_testenv_start_registry "$state" registry) || return 1
    auth=$(_testenv_start_registry "$state" registry-auth "$state/htpasswd") || return 1
    local postgres_url
    postgres_url=$(_testenv_start_postgres "$state") || return 1

    export HOIST_TEST_STATE="$state"
    export HOIST_TEST_DOCKER_HOST
    HOIST_TEST_DOCKER_HOST=$(cat "$state/docker_host")
    export HOIST_TEST_REGISTRY="$anon"
    export HOIST_TEST_AUTH_REGISTRY="$auth"
    export HOIST_TEST_REGISTRY_USER="$user"
    export HOIST_TEST_REGISTRY_PASSWORD="$password"
    export HOIST_TEST_POSTGRES_URL="$postgres_url"
    export HOIST_TEST_POSTGRES_CA="$state/pg/ca.crt"
    {
        printf 'export HOIST_TEST_STATE=%q\n' "$state"
        printf 'export HOIST_TEST_DOCKER_HOST=%q\n' "$HOIST_TEST_DOCKER_HOST"
        printf 'export HOIST_TEST_REGISTRY=%q\n' "$anon"
        printf 'export HOIST_TEST_AUTH_REGISTRY=%q\n' "$auth"
        printf 'export HOIST_TEST_REGISTRY_USER=%q\n' "$user"
        printf 'export HOIST_TEST_REGISTRY_PASSWORD=%q\n' "$password"
        printf 'export HOIST_TEST_POSTGRES_URL=%q\n' "$postgres_url"
        printf 'export HOIST_TEST_POSTGRES_CA=%q\n' "$HOIST_TEST_POSTGRES_CA"
    } >"$state/env"
    chmod 600 "$state/env"
    _testenv_log "engine $HOIST_TEST_DOCKER_HOST, registries $anon (anonymous) and $auth (basic auth), PostgreSQL on 127.0.0.1:$(cat "$state/pg/port"); env in $state/env"
}

_testenv_stop_pid() {
    local pidfile=$1 pid i
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

testenv_down() {
    local state
    state=$(_testenv_state)
    [ -d "$state" ] || return 0
    state=$(cd "$state" && pwd)
    _testenv_stop_pid "$state/registry/pid"
    _testenv_stop_pid "$state/registry-auth/pid"
    _testenv_stop_postgres "$state"
    if [ -f "$state/docker_host" ]; then
        # Leaving the swarm removes its services, so a re-run starts clean.
        timeout 30 docker -H "$(cat "$state/docker_host")" swarm leave --force >/dev/null 2>&1 || true
    fi
    if [ ! -f "$state/docker.pid" ] && [ -f "$state/docker.pid.launch" ]; then
        mv "$state/docker.pid.launch" "$state/docker.pid"
    fi
    _testenv_stop_pid "$state/docker.pid"
    rm -f "$state/docker.pid.launch"
    if [ -f "$state/short_dir" ]; then
        local short
        short=$(cat "$state/short_dir")
        case "$short" in
        /tmp/hoist-dk-*)
            # Containers may leave mounts behind under the exec root.
            { grep -o " $short[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do
                umount -l "$m" 2>/dev/null || true
            done
            rm -rf "$short"
            ;;
        esac
        rm -f "$state/short_dir"
    fi
    rm -f "$state/env"
    _testenv_log "stopped"
}
