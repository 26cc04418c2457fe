#!/usr/bin/env bash
# Create the virtual environments of the benchmark's Keras peers (CPU wheels from PyPI).
#
#   bash benchmarks/setup_peers.sh            # both peers
#   bash benchmarks/setup_peers.sh keras-jax  # one peer
#
# Each peer gets benchmarks/.venvs/<peer>. A venv that already imports its packages is left
# alone (idempotent); a half-built one is rebuilt. A peer that cannot be installed prints one
# line saying so, its venv is removed (the harness then skips it) and the script goes on with
# the next; the exit status is the number of peers that failed. Logs: benchmarks/.venvs/logs/. The project venv (.venv) is never touched.
#
# The machine-wide pip config pins torch through a constraints file; the peers need no torch,
# so the constraint is lifted for them (PIP_CONSTRAINT empty) to keep it from interfering.
set -u
set -f  # no globbing: "jax[cpu]" is a requirement, not a file pattern

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="$HERE/.venvs"
PYTHON="${PYTHON:-python3}"
LOGS="$VENVS/logs"

# peer name -> alternative requirement sets, tried in order until one installs and imports;
# within a set, packages are joined by "|"
declare -A CANDIDATES=(
  [keras-jax]="keras|jax[cpu]"
  [keras-tf]="keras|tensorflow-cpu keras|tensorflow"
)
# peer name -> import check proving the venv works
declare -A CHECKS=(
  [keras-jax]="import os; os.environ['KERAS_BACKEND']='jax'; import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__)"
  [keras-tf]="import os; os.environ['KERAS_BACKEND']='tensorflow'; os.environ['TF_CPP_MIN_LOG_LEVEL']='2'; import keras, tensorflow as tf; print('keras', keras.__version__, 'tensorflow', tf.__version__)"
)

check_peer() {  # check_peer NAME -> prints versions, status 0 when the venv imports its packages
  local py="$VENVS/$1/bin/python"
  [ -x "$py" ] && "$py" -c "${CHECKS[$1]}" 2>/dev/null
}

install_peer() {  # install_peer NAME -> status 0 on success; output goes to $LOGS/NAME.log
  local name="$1" venv="$VENVS/$1" log="$LOGS/$1.log" reqs
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" >>"$log" 2>&1 || return 1
  PIP_CONSTRAINT= "$venv/bin/python" -m pip install -q --upgrade pip >>"$log" 2>&1
  for reqs in ${CANDIDATES[$name]}; do
    echo "[$name] pip install ${reqs//|/ }" >>"$log"
    # shellcheck disable=SC2086
    if PIP_CONSTRAINT= "$venv/bin/python" -m pip install --no-cache-dir ${reqs//|/ } >>"$log" 2>&1 \
        && check_peer "$name" >/dev/null; then
      return 0
    fi
  done
  return 1
}

main() {
  mkdir -p "$LOGS"
  local peers=("$@") failed=0 name versions
  [ ${#peers[@]} -eq 0 ] && peers=(keras-jax keras-tf)
  for name in "${peers[@]}"; do
    if [ -z "${CANDIDATES[$name]+x}" ]; then
      echo "$name: unknown peer (known: ${!CANDIDATES[*]})"; failed=$((failed + 1)); continue
    fi
    if versions="$(check_peer "$name")"; then
      echo "$name: already installed ($versions), skipped"; continue
    fi
    echo "$name: installing into benchmarks/.venvs/$name (log: benchmarks/.venvs/logs/$name.log) ..."
    if install_peer "$name"; then
      echo "$name: installed ($(check_peer "$name"))"
    else
      rm -rf "${VENVS:?}/$name"  # no half-built venv: the harness then skips the peer cleanly
      echo "$name: NOT installed, see benchmarks/.venvs/logs/$name.log (last line: $(tail -n 1 "$LOGS/$name.log"))"
      failed=$((failed + 1))
    fi
  done
  return "$failed"
}

main "$@"
