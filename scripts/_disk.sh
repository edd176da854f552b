# Sourced by quickstart.sh and test.sh: refuse to start when the disk cannot hold the run, with one
# clear line, instead of failing an hour later inside a dependency ("No space left on device" while
# LLaMA-Factory or TRL writes a checkpoint). Sizes measured on the CPU machine (x86_64, 2026-11).
free_gb() {  # free_gb DIR: whole GiB available to this user on DIR's filesystem
  df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'
}
setup_gb() {  # setup_gb [VENV...]: GiB the environments named (default: all) still missing here will take (pip's downloads and unpacking included)
  local gb=0 venv
  [ $# -gt 0 ] || set -- .venv .venvs/sft .venvs/rl .venvs/serve .venvs/vllm .venvs/verifiers
  for venv in "$@"; do
    [ -x "$venv/bin/python" ] && continue
    case "$venv" in
      .venv) gb=$((gb + 3)) ;;
      .venvs/sft) gb=$((gb + 10)) ;;  # torch 2.9.1 from PyPI is a CUDA build: 8 GB installed
      .venvs/rl) gb=$((gb + 3)) ;;
      .venvs/serve) gb=$((gb + 1)) ;;
      .venvs/vllm) gb=$((gb + 4)) ;;  # vLLM's CPU build: 2.5 GB installed
      .venvs/verifiers) gb=$((gb + 1)) ;;  # verifiers and the offline web, no torch: 0.7 GB installed
    esac
  done
  echo "$gb"
}
need_disk() {  # need_disk GB DIR WHAT: stop unless DIR's disk has GB GiB free
  local want=$1 dir=$2 what=$3 have
  have=$(free_gb "$dir")
  if [ "$have" -lt "$want" ]; then
    echo "error: $what needs about $want GiB free on the disk of $dir; it has $have GiB." >&2
    echo "       Free some space there (old runs/ folders, old pytest-of-$(id -un) folders) and run it again." >&2
    exit 1
  fi
}
