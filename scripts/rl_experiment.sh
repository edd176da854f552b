#!/usr/bin/env bash
# The RL experiment's further seeds (docs/rl.md, "Does RL improve the agent?"): each from the SFT checkpoint of the
# config's run (which `webdancer pipeline CONFIG` made, seed 1), trained and evaluated in a run of its own, then every
# evaluation side by side with paired differences.
#   bash scripts/rl_experiment.sh configs/rl/experiment.yaml 2 3
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: scripts/rl_experiment.sh CONFIG SEED...}
shift
webdancer=.venv/bin/webdancer
read -r root name < <(.venv/bin/python -c 'import sys; from webdancer.config_loader import load_config
c = load_config(sys.argv[1]); print(c.run.dir.parent, c.run.name)' "$config")
first="$root/$name"
[ -f "$first/sft/trainer_state.json" ] || { echo "error: $first has no SFT checkpoint: run \`webdancer pipeline $config\` first" >&2; exit 2; }
runs=("after_sft=$first/eval/after" "control=$first/eval/control" "after_rl_seed1=$first/eval/after_rl")
for seed in "$@"; do
  run="$root/$name-seed$seed"
  if [ ! -d "$run" ]; then  # everything up to SFT, shared; RL and its evaluation are this seed's own
    mkdir -p "$run.tmp"
    for item in "$first"/*; do
      case "$(basename "$item")" in rl|rl_data|pipeline.json|report.md|report.html|rl_reward.png|logs) ;; *) cp -a "$item" "$run.tmp/" ;; esac
    done
    .venv/bin/python - "$first/pipeline.json" "$run.tmp/pipeline.json" <<'PY'  # the stages up to SFT count as done
import json, sys
state = json.load(open(sys.argv[1]))
state["stages"] = {k: v for k, v in state["stages"].items() if k not in ("eval_control", "rl", "eval_rl", "report")}
json.dump(state, open(sys.argv[2], "w"), indent=2)
PY
    rm -rf "$run.tmp/eval/after_rl" "$run.tmp/eval/control" "$run.tmp/eval/compare.md" "$run.tmp/eval/compare.png"
    mv "$run.tmp" "$run"
  fi
  $webdancer pipeline -c "$config" "run.name=$name-seed$seed" "rl.seed=$seed" "pipeline.stages=[rl,eval_rl,report]"
  runs+=("after_rl_seed$seed=$run/eval/after_rl")
done
$webdancer eval compare --out "$first/eval/seeds" "${runs[@]}"
echo "every seed side by side: $first/eval/seeds/compare.md"
