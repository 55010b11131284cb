# Shared by bench/gpu_check.sh and bench/mps_check.sh (sourced from the repository root; the caller
# sets TAG, PY and out). Functions: require_device, new_workdir, run_step, write_summary.

# require_device WHAT CHECK_PY: one line on stderr and exit 1 unless $PY runs and the Python code
# CHECK_PY (which sys.exit()s with a reason when the device is missing) passes.
require_device() {
  local what=$1 check=$2 why
  if ! command -v "$PY" >/dev/null 2>&1; then
    echo "$TAG: no $what visible: '$PY' not found (set PYTHON to the interpreter with torch)" >&2
    exit 1
  fi
  if ! why="$("$PY" -c "$check" 2>&1)"; then
    echo "$TAG: no $what visible: ${why##*$'\n'}; nothing run" >&2
    exit 1
  fi
}

# new_workdir: $work (next to the summary, emptied) with an empty steps.tsv.
new_workdir() {
  work="${out%.json}.d"
  rm -rf "$work"
  mkdir -p "$work"
  : > "$work/steps.tsv"
}

# run_step NAME LIMIT_S STDOUT_FILE COMMAND...: run with a time limit (the whole process group is
# stopped past it), stderr to $work/NAME.log; appends "NAME rc seconds" to steps.tsv (rc 124: limit).
run_step() {
  local name=$1 limit=$2 stdout=$3
  shift 3
  local start rc
  start=$(date +%s)
  set +e
  "$PY" -c '
import os, signal, subprocess, sys
limit, stdout, stderr, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
with open(stdout, "w") as so, open(stderr, "w") as se:
    p = subprocess.Popen(cmd, stdout=so, stderr=se, start_new_session=True)
    try:
        sys.exit(p.wait(timeout=limit))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        se.write(f"\nstopped after {limit:.0f} s\n")
        sys.exit(124)
' "$limit" "$stdout" "$work/$name.log" "$@"
  rc=$?
  set -e
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$work/steps.tsv"
  echo "$TAG: $name exit $rc in $(( $(date +%s) - start )) s" >&2
}

# write_summary DEVICE_JSON: assemble $out from $work (bench/device_check_summary.py; DEVICE_JSON
# holds the device's own fields) and return its status (0 every step passed, 2 otherwise).
write_summary() {
  "$PY" bench/device_check_summary.py "$work" "$out" "$TAG" "$1"
}
