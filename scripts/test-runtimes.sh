#!/usr/bin/env bash
# Starts and stops the container runtimes the container tests use: containerd, dockerd and
# podman's Docker-compatible API service (containerd and dockerd with state of their own;
# podman on the host's storage, so only labelled containers are touched), plus a busybox test
# image built locally (no registry is reachable) and loaded into all three.
#
#   scripts/test-runtimes.sh start   # idempotent: starts what is not running, (re)loads the image
#   scripts/test-runtimes.sh stop    # removes test containers, stops what start started, removes
#                                    # the runtimes' cgroups; exits 1 listing anything left behind
#   scripts/test-runtimes.sh status
#
# Needs root and the Debian packages containerd, runc, docker.io, podman, busybox-static.
set -euo pipefail

STATE=${FAULTLINE_RUNTIMES_DIR:-/var/lib/faultline-test-runtimes}
IMAGE=localhost/faultline-test/busybox:latest
CTR_NS=faultline-test
DOCKER_SOCK=/run/docker.sock
CONTAINERD_SOCK=/run/containerd/containerd.sock
PODMAN_SOCK=/run/podman/podman.sock

log() { printf 'test-runtimes: %s\n' "$*" >&2; }

wait_for_socket() { # path, what, pidfile
  for _ in $(seq 1 100); do
    [ -S "$1" ] && return 0
    if [ -n "${3:-}" ] && [ -f "$3" ] && ! kill -0 "$(cat "$3")" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "$2 did not come up; its log:"
  tail -n 30 "$STATE/$2.log" >&2 || true
  return 1
}

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

build_image() { # a docker-archive tarball: /bin/busybox and its applet links, no `ip`
  local dir
  dir=$(mktemp -d)
  mkdir -p "$dir/rootfs/bin"
  cp "$(command -v busybox)" "$dir/rootfs/bin/busybox"
  for applet in sh sleep cat ls ps echo true kill; do ln -s busybox "$dir/rootfs/bin/$applet"; done
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir/rootfs" -cf "$dir/layer.tar" bin
  local layer config
  layer=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
  mkdir "$dir/$layer" && mv "$dir/layer.tar" "$dir/$layer/layer.tar"
  printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sleep","3600"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" > "$dir/config.json"
  config=$(sha256sum "$dir/config.json" | cut -d' ' -f1)
  mv "$dir/config.json" "$dir/$config.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config" "$IMAGE" "$layer" > "$dir/manifest.json"
  tar -C "$dir" -cf "$STATE/busybox.tar" manifest.json "$config.json" "$layer"
  rm -rf "$dir"
}

# podman's default rlimits (nofile, nproc 1048576) exceed what this host grants (no
# CAP_SYS_RESOURCE; DESIGN.md section 6), so every container created through the API service
# would fail with "error setting rlimits". The service gets a containers.conf of its own with
# 4096 instead. CONTAINERS_CONF replaces every other containers.conf, so the service runs on
# podman's built-in defaults plus these limits, whatever the host's files say. (The podman CLI
# in the tests passes the same limits as --ulimit.)
podman_conf() {
  printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n' > "$STATE/containers.conf"
}

# A socket at one of our paths while our daemon is not running: left over from a crash (then
# removed), or another daemon's (docker.io's init script starts one with iptables and a bridge).
# The tests must not run against that one, so start refuses.
foreign_daemon() { # socket, what, probe command...
  local sock=$1 what=$2
  shift 2
  [ -S "$sock" ] || return 0
  if timeout 10 "$@" > /dev/null 2>&1; then
    log "a $what not started by this script answers at $sock: stop it first (this script starts its own, configured for the tests)"
    return 1
  fi
  rm -f "$sock"
}

start() {
  mkdir -p "$STATE" /run/podman
  if ! running containerd; then
    foreign_daemon "$CONTAINERD_SOCK" containerd ctr --address "$CONTAINERD_SOCK" version
    log "starting containerd"
    containerd --root "$STATE/containerd" --state /run/containerd --address "$CONTAINERD_SOCK" > "$STATE/containerd.log" 2>&1 &
    echo $! > "$STATE/containerd.pid"
    wait_for_socket "$CONTAINERD_SOCK" containerd "$STATE/containerd.pid"
  fi
  if ! running dockerd; then
    foreign_daemon "$DOCKER_SOCK" dockerd docker -H "unix://$DOCKER_SOCK" version
    log "starting dockerd (--iptables=false --bridge=none)"
    dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$STATE/docker" --exec-root /run/faultline-test-docker \
      --pidfile /run/faultline-test-dockerd.pid -H "unix://$DOCKER_SOCK" --containerd "$CONTAINERD_SOCK" > "$STATE/dockerd.log" 2>&1 &
    echo $! > "$STATE/dockerd.pid"
    wait_for_socket "$DOCKER_SOCK" dockerd "$STATE/dockerd.pid"
  fi
  if ! running podman; then
    foreign_daemon "$PODMAN_SOCK" "podman API service" podman --remote --url "unix://$PODMAN_SOCK" version
    log "starting podman system service (default ulimits nofile and nproc 4096)"
    podman_conf
    CONTAINERS_CONF="$STATE/containers.conf" podman system service --time=0 "unix://$PODMAN_SOCK" > "$STATE/podman.log" 2>&1 &
    echo $! > "$STATE/podman.pid"
    wait_for_socket "$PODMAN_SOCK" podman "$STATE/podman.pid"
  fi
  log "building and loading $IMAGE"
  build_image
  docker load -q -i "$STATE/busybox.tar" > /dev/null
  ctr -n "$CTR_NS" images import "$STATE/busybox.tar" > /dev/null
  podman load -q -i "$STATE/busybox.tar" > /dev/null
  log "ready: containerd, dockerd and podman with $IMAGE"
}

remove_test_containers() {
  # dockerd runs on a data root of its own: every container in it is a test's.
  if [ -S "$DOCKER_SOCK" ]; then
    docker ps -aq | xargs -r docker rm -f -v > /dev/null 2>&1 || true
  fi
  # podman shares the host's storage: only what the tests and benchmarks labelled.
  if command -v podman > /dev/null; then
    podman ps -aq --filter label=faultline-test | xargs -r podman rm -f -v -t 0 > /dev/null 2>&1 || true
  fi
  if [ -S "$CONTAINERD_SOCK" ]; then
    for id in $(ctr -n "$CTR_NS" containers ls -q 2>/dev/null); do
      ctr -n "$CTR_NS" tasks kill -s KILL "$id" > /dev/null 2>&1 || true
      for _ in $(seq 1 20); do ctr -n "$CTR_NS" tasks rm "$id" > /dev/null 2>&1 && break; sleep 0.1; done
      # A task whose cgroup is frozen never dies of SIGKILL; runc's forced delete thaws it first.
      ctr -n "$CTR_NS" tasks rm -f "$id" > /dev/null 2>&1 || true
      ctr -n "$CTR_NS" containers rm "$id" > /dev/null 2>&1 || true
    done
  fi
}

# Test containers still there (asked while the daemons run), one line each.
leftover_containers() {
  if [ -S "$DOCKER_SOCK" ]; then docker ps -aq 2>/dev/null | sed 's/^/docker container /' || true; fi
  if command -v podman > /dev/null; then podman ps -aq --filter label=faultline-test 2>/dev/null | sed 's/^/podman container /' || true; fi
  if [ -S "$CONTAINERD_SOCK" ]; then ctr -n "$CTR_NS" containers ls -q 2>/dev/null | sed 's/^/containerd container /' || true; fi
}

# Shims of the test namespace and of docker's ("moby"): both are this containerd's.
shim_pids() { pgrep -f "containerd-shim-runc-v2 -namespace ($CTR_NS|moby) " || true; }

# The parent cgroups the runtimes create under every hierarchy (cgroupfs drivers): dockerd's
# "docker", ctr's "<namespace>" and podman's "libpod_parent" (its containers and conmon).
# runc removes a container's own cgroup, never these.
CGROUP_PARENTS="docker $CTR_NS libpod_parent"
cgroup_roots() { awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts; }

# Removes those parents once they hold no process (rmdir refuses a cgroup that does), deepest
# first; a cgroup that cannot go is reported by leftovers.
remove_cgroups() {
  local root parent
  for root in $(cgroup_roots); do
    for parent in $CGROUP_PARENTS; do
      [ -d "$root/$parent" ] || continue
      find "$root/$parent" -depth -type d -exec rmdir {} \; 2> /dev/null || true
    done
  done
}

# Daemons, shims, monitors, mounts, network namespaces and cgroups still there once everything
# was stopped, one line each.
leftovers() {
  local daemon root parent
  for daemon in podman dockerd containerd; do
    if running "$daemon"; then echo "$daemon still running (pid $(cat "$STATE/$daemon.pid"))"; fi
  done
  shim_pids | sed 's/^/containerd shim, pid /'
  { pgrep -x conmon || true; } | sed 's/^/podman conmon, pid /'
  # overlay, shm and netns mounts of the daemons' state (podman's is the host's storage)
  awk -v a="$STATE/" -v b=/run/faultline-test-docker/ -v c=/run/containerd/io.containerd.runtime.v2.task/ \
    -v d=/var/lib/containers/storage/overlay/ -v e=/run/containers/storage/ -v f=/run/netns/netns- \
    'index($2, a) == 1 || index($2, b) == 1 || index($2, c) == 1 || index($2, d) == 1 || index($2, e) == 1 || index($2, f) == 1 { print "mount " $2 }' /proc/self/mounts
  # podman's named network namespaces (netns-<uuid>), mounted or not
  find /run/netns -maxdepth 1 -name 'netns-*' 2> /dev/null | sed 's/^/netns /'
  for root in $(cgroup_roots); do
    for parent in $CGROUP_PARENTS; do
      if [ -d "$root/$parent" ]; then echo "cgroup $root/$parent"; fi
    done
  done
}

stop() {
  remove_test_containers
  local containers_left
  containers_left=$(leftover_containers)
  for daemon in podman dockerd containerd; do
    if running "$daemon"; then
      log "stopping $daemon"
      kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true
      for _ in $(seq 1 100); do running "$daemon" || break; sleep 0.1; done
      if running "$daemon"; then kill -9 "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true; sleep 0.5; fi
    fi
    running "$daemon" || rm -f "$STATE/$daemon.pid"
  done
  # containerd-shims outlive containerd by design; the containers are gone, so are they soon
  for _ in $(seq 1 30); do [ -n "$(shim_pids)" ] || break; sleep 0.1; done
  for pid in $(shim_pids); do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do [ -n "$(shim_pids)" ] || break; sleep 0.1; done
  # A socket file without its daemon would make the tests try it rather than say it is stopped.
  running podman || rm -f "$PODMAN_SOCK"
  running dockerd || rm -f "$DOCKER_SOCK"
  running containerd || rm -f "$CONTAINERD_SOCK"
  # dockerd bind-mounts its data root onto itself (for mount propagation) and does not always
  # take that back (after a kill, or when an earlier dockerd made it); the state is ours alone.
  if ! running dockerd && ! running containerd && ! running podman; then
    awk -v a="$STATE/" 'index($2 "/", a) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
      umount "$m" 2> /dev/null || umount -l "$m" 2> /dev/null || true
    done
  fi
  remove_cgroups
  local left
  left=$(printf '%s\n%s' "$containers_left" "$(leftovers)" | sed '/^$/d')
  if [ -n "$left" ]; then
    log "left behind:"
    sed 's/^/  /' <<< "$left" >&2
    return 1
  fi
  log "stopped: no test containers, daemons, shims, conmon, mounts, netns or cgroups left"
}

status() {
  for daemon in containerd dockerd podman; do
    if running "$daemon"; then echo "$daemon: running (pid $(cat "$STATE/$daemon.pid"))"; else echo "$daemon: stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
