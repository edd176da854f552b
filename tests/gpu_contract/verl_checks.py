"""Run in the RL environment by test_recipes.py: verl's checks (webdancer_rl.verl_preflight.check) of several commands in
one process, so verl is imported once. Reads [{"name", "command", "model"}] as JSON on stdin; prints one JSON object
{name: report | {"refused": message}}."""

import json
import sys

from webdancer_rl.verl_preflight import Refused, check

out = {}
for item in json.load(sys.stdin):
    try:
        out[item["name"]] = check(item["command"][3:], item.get("model"))
    except Refused as exc:
        out[item["name"]] = {"refused": str(exc)}
print(json.dumps(out))
