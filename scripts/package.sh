#!/usr/bin/env bash
# npm run package [-- --version V] [-- --out DIR] [-- --no-build] [-- --fast]
#
# Builds dist/faultline_<version>_amd64.deb: everything the agent, the server and the CLI need,
# Node.js included, so it installs on a Debian 12 host without Node.js:
#
#   /opt/faultline/bin/node          the Node.js runtime this build was made and tested with
#   /opt/faultline/dist/             the compiled code (the package root: package.json, native/)
#   /opt/faultline/dist/web/         the dashboard the server serves at / (npm run build makes it)
#   /opt/faultline/native/*/         the native helpers (built here; no compiler on the host)
#   /opt/faultline/node_modules/     production dependencies only, with their native addons
#   /usr/bin/faultline               the entry point
#   /lib/systemd/system/             faultline-agent.service, faultline-server.service
#   /etc/faultline/                  agent.yaml, server.yaml (conffiles), policy.yaml.example
#
# --version overrides package.json's version (the upgrade tests build a newer package of the
# same code); the agent and server report it. --no-build packages what `npm run build` last
# made (the tests build once and package twice). --fast compresses with gzip -1 instead of
# xz -6: a bigger file in a few seconds, for tests; releases use the default.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(node -p 'require("./package.json").version')
out=dist
build=1
compress=(-Zxz -z6)
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=; shift ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "package: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$version" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]]; then
  echo "package: \"$version\" is not a Debian version (digits first, then letters, digits, . + ~ -)" >&2
  exit 2
fi
[ "$(uname -m)" = x86_64 ] || { echo "package: builds amd64 packages only, on x86_64 (this is $(uname -m))" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "package: dpkg-deb is needed (apt-get install dpkg)" >&2; exit 1; }

step() { printf '%s package: %s\n' "$(date +%T)" "$*" >&2; }

if [ -n "$build" ]; then
  step "building (tsc, native helpers, man page)"
  npm run -s build
else
  [ -f dist/cli/main.js ] && [ -f dist/man/faultline.1 ] || { echo "package: --no-build, but nothing is built (run npm run build)" >&2; exit 1; }
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/faultline-package.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
opt=$root/opt/faultline
mkdir -p "$opt/bin" "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/faultline" \
  "$root/usr/share/doc/faultline" "$root/usr/share/man/man1" "$root/usr/share/lintian/overrides" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions"

step "code and native helpers"
# The package root that agent/native/paths.ts and common/version.ts climb to: package.json
# (name, version, type) next to dist/ and native/.
node -e '
  const pkg = require("./package.json")
  const out = { name: pkg.name, version: process.argv[1], description: pkg.description, type: pkg.type, license: pkg.license, private: true, dependencies: pkg.dependencies }
  require("fs").writeFileSync(process.argv[2], JSON.stringify(out, null, 2) + "\n")
' "$version" "$opt/package.json"
mkdir -p "$opt/dist"
for part in agent cli common protocol server; do
  (cd dist && find "$part" -name '*.js' -print0) | (cd dist && xargs -0 cp --parents -t "$opt/dist")
done
# The dashboard the server serves at / (index.html, hashed assets, their .gz copies, build.json
# by which the server knows a build).
[ -f dist/web/build.json ] || { echo "package: the dashboard was not built (dist/web; run npm run build)" >&2; exit 1; }
cp -a dist/web "$opt/dist/web"
# Each helper's executables (and nsexec's preload library), at the paths the code expects.
for helper in nsexec/build/faultline-nsexec nsexec/build/libfaultline-nsexec.so netdelay/faultline-netdelay iofault/faultline-iofault timeskew/faultline-timeskew stress/build/faultline-stress; do
  [ -f "native/$helper" ] || { echo "package: native helper $helper was not built" >&2; exit 1; }
  install -D -m 0755 "native/$helper" "$opt/native/$helper"
done

step "production dependencies"
# The modules of this checkout that production needs (npm ls --omit=dev), native addons as built
# here against this Node.js, without their sources and build leftovers.
mapfile -t modules < <(npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2)
[ "${#modules[@]}" -gt 0 ] || { echo "package: npm ls found no production dependencies (run npm ci first)" >&2; exit 1; }
for dir in "${modules[@]}"; do
  rel=${dir#"$PWD/"}
  [ -e "$opt/$rel" ] && continue # came with the module it is nested in
  mkdir -p "$opt/$(dirname "$rel")"
  cp -a "$dir" "$opt/$rel"
done
nm=$opt/node_modules
rm -rf "$nm/better-sqlite3/deps" "$nm/better-sqlite3/src" "$nm/better-sqlite3/build/Release/obj" \
  "$nm/better-sqlite3/build/Release/obj.target" "$nm/better-sqlite3/build/Release/.deps" "$nm/better-sqlite3/build/deps" \
  "$nm/better-sqlite3/build/Release/test_extension.node"
# Sources (TypeScript is never run here), docs, tests and the dotfiles of the modules' own repositories are not run.
find "$nm" -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' -o -name '.*' -o \( -name '*.md' ! -iname 'license*' \) \) -delete
find "$nm" -type d \( -name test -o -name tests -o -name __tests__ -o -name docs -o -name example -o -name examples \
  -o -name integration -o -name benchmark -o -name benchmarks -o -name .github -o -name .husky \) -prune -exec rm -rf {} +
# koffi carries its addon for every platform; this package is for glibc on x86_64.
find "$nm/@koromix" -mindepth 1 -maxdepth 1 ! -name koffi-linux-x64 -exec rm -rf {} + 2>/dev/null || true
rm -rf "$nm/@koromix/koffi-linux-x64/musl_x64"
# Nothing here is run as a script (the entry point calls the package's Node.js): the modules'
# "#!/usr/bin/env node" lines become blank, so no file asks for a system Node.js (line numbers kept).
grep -rlZ --include='*.js' --include='*.cjs' --include='*.mjs' -m1 '^#!.*node' "$nm" "$opt/dist" |
  xargs -0 -r sed -i '1s|^#!.*node.*$||'
find "$nm" "$opt/dist" -type f -exec chmod 0644 {} +

[ -f "$nm/better-sqlite3/build/Release/better_sqlite3.node" ] || { echo "package: better-sqlite3's addon is missing" >&2; exit 1; }

step "Node.js runtime $(node --version)"
cp "$(command -v node)" "$opt/bin/node"
chmod 755 "$opt/bin/node"

step "entry point, units, configuration, docs"
cat > "$root/usr/bin/faultline" <<'ENTRY'
#!/bin/sh
# Faultline's own Node.js runs the CLI (agent, server and every command); see faultline(1).
exec /opt/faultline/bin/node /opt/faultline/dist/cli/main.js "$@"
ENTRY
chmod 755 "$root/usr/bin/faultline"
install -m 0644 systemd/faultline-agent.service systemd/faultline-server.service "$root/lib/systemd/system/"
install -m 0644 examples/agent.yaml "$root/etc/faultline/agent.yaml"
install -m 0644 examples/server.yaml "$root/etc/faultline/server.yaml"
install -m 0644 examples/policy.yaml "$root/etc/faultline/policy.yaml.example"
printf '/etc/faultline/agent.yaml\n/etc/faultline/server.yaml\n/etc/faultline/policy.yaml.example\n' > "$root/DEBIAN/conffiles"
install -m 0644 README.md docs/*.md "$root/usr/share/doc/faultline/"
install -m 0644 packaging/deb/copyright "$root/usr/share/doc/faultline/copyright"
printf 'faultline (%s) stable; urgency=medium\n\n  * Release %s. See /usr/share/doc/faultline/README.md.\n\n -- Faultline developers <faultline@example.org>  %s\n' \
  "$version" "$version" "$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")" | gzip -9n > "$root/usr/share/doc/faultline/changelog.gz"
gzip -9n < dist/man/faultline.1 > "$root/usr/share/man/man1/faultline.1.gz"
install -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/faultline"
"$opt/bin/node" "$opt/dist/cli/main.js" completion bash > "$root/usr/share/bash-completion/completions/faultline"
"$opt/bin/node" "$opt/dist/cli/main.js" completion zsh > "$root/usr/share/zsh/vendor-completions/_faultline"

step "control and maintainer scripts"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" packaging/deb/control.in > "$root/DEBIAN/control"
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$root" -type f -perm -u+x -exec chmod 0755 {} +
# Addons and libraries are loaded, not run.
find "$root" -type f \( -name '*.node' -o -name '*.so' \) -exec chmod 0644 {} +
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum | sed 's| \./| |' > DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

mkdir -p "$out"
deb=$out/faultline_${version}_amd64.deb
step "dpkg-deb $deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
step "done: $deb ($(du -h "$deb" | cut -f1), $((size / 1024)) MiB installed)"
echo "$deb"
