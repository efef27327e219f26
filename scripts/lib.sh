# Shared by scripts/run and scripts/test: installs what Cohort needs on a Debian or
# Ubuntu machine, once. Source it; do not run it.

set -euo pipefail

# Runs a command as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: '$*' needs root; install the packages listed in README.md first" >&2; exit 1
  fi
}

# Debian packages: Orthanc 1.10.1 and its SDK header, libclang for bindgen, dcmtk for
# DICOM test tools, p7zip-full and zstd for archives made by real tools (Deflate64 and
# encrypted ZIPs, .tar.zst), PostgreSQL server binaries (for a throwaway cluster when
# none runs), Chromium, its WebDriver and fonts for the web console's browser tests.
ensure_packages() {
  local want=(orthanc orthanc-dev libclang-dev dcmtk p7zip-full zstd postgresql python3-pip pkg-config
              chromium chromium-driver fonts-liberation fonts-dejavu-core)
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Debian's package starts an Orthanc service where systemd runs; ours are our own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
    as_root systemctl stop orthanc || true
  fi
  if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust (rustup) first" >&2; exit 1
  fi
}

# Python packages that generate real DICOM test data and push it over DICOM, and the
# OpenAPI fuzzer of the hostile-input suite.
ensure_python() {
  if ! python3 -c 'import pydicom, pynetdicom, highdicom, schemathesis' 2>/dev/null; then
    echo "==> installing Python packages: pydicom pynetdicom highdicom schemathesis"
    python3 -m pip install -q pydicom pynetdicom highdicom schemathesis 2>/dev/null \
      || python3 -m pip install -q --break-system-packages pydicom pynetdicom highdicom schemathesis
  fi
}
