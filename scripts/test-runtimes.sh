#!/usr/bin/env bash
# Starts and stops the container runtimes the container tests use: containerd, dockerd and
# podman's Docker-compatible API service, each with state of its own, plus a busybox test
# image built locally (no registry is reachable) and loaded into all three.
#
#   scripts/test-runtimes.sh start   # idempotent: starts what is not running, (re)loads the image
#   scripts/test-runtimes.sh stop    # removes test containers, stops what start started
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

start() {
  mkdir -p "$STATE" /run/podman
  if ! running containerd; then
    log "starting containerd"
    containerd --root "$STATE/containerd" --state /run/containerd --address "$CONTAINERD_SOCK" > "$STATE/containerd.log" 2>&1 &
    echo $! > "$STATE/containerd.pid"
    wait_for_socket "$CONTAINERD_SOCK" containerd "$STATE/containerd.pid"
  fi
  if ! running dockerd; then
    log "starting dockerd (--iptables=false --bridge=none)"
    dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$STATE/docker" --exec-root /run/faultline-test-docker \
      --pidfile /run/faultline-test-dockerd.pid -H "unix://$DOCKER_SOCK" --containerd "$CONTAINERD_SOCK" > "$STATE/dockerd.log" 2>&1 &
    echo $! > "$STATE/dockerd.pid"
    wait_for_socket "$DOCKER_SOCK" dockerd "$STATE/dockerd.pid"
  fi
  if ! running podman; then
    log "starting podman system service"
    podman system service --time=0 "unix://$PODMAN_SOCK" > "$STATE/podman.log" 2>&1 &
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
  if [ -S "$DOCKER_SOCK" ]; then
    docker ps -aq --filter label=faultline-test | xargs -r docker rm -f > /dev/null 2>&1 || true
  fi
  if command -v podman > /dev/null; then
    podman ps -aq --filter label=faultline-test | xargs -r podman rm -f -t 0 > /dev/null 2>&1 || true
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
  if [ -S "$DOCKER_SOCK" ]; then docker ps -aq --filter label=faultline-test 2>/dev/null | sed 's/^/docker container /' || true; fi
  if command -v podman > /dev/null; then podman ps -aq --filter label=faultline-test 2>/dev/null | sed 's/^/podman container /' || true; fi
  if [ -S "$CONTAINERD_SOCK" ]; then ctr -n "$CTR_NS" containers ls -q 2>/dev/null | sed 's/^/containerd container /' || true; fi
}

shim_pids() { pgrep -f "containerd-shim-runc-v2 -namespace $CTR_NS " || true; }

# Daemons, shims and mounts still there once everything was stopped, one line each.
leftovers() {
  local daemon
  for daemon in podman dockerd containerd; do
    if running "$daemon"; then echo "$daemon still running (pid $(cat "$STATE/$daemon.pid"))"; fi
  done
  shim_pids | sed 's/^/containerd shim of the test namespace, pid /'
  # overlay and netns mounts of the daemons' own state
  awk -v a="$STATE/" -v b=/run/faultline-test-docker/ -v c="/run/containerd/io.containerd.runtime.v2.task/$CTR_NS/" \
    'index($2, a) == 1 || index($2, b) == 1 || index($2, c) == 1 { print "mount " $2 }' /proc/self/mounts
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
  local left
  left=$(printf '%s\n%s' "$containers_left" "$(leftovers)" | sed '/^$/d')
  if [ -n "$left" ]; then
    log "left behind:"
    sed 's/^/  /' <<< "$left" >&2
    return 1
  fi
  log "stopped: no test containers, daemons, shims or mounts left"
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
