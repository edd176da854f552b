"""API keys for every Ray worker, kept out of verl's command, config and log: Ray's job-level runtime env.

`ray.init` merges the runtime env in RAY_JOB_CONFIG_JSON_ENV_VAR (what `ray job submit --runtime-env-json` sets
for a job's driver) with the one verl passes, so variables put there reach every worker on every node, while
verl prints only its own. `command.sh` builds it from the shell's environment when it runs:

    export RAY_JOB_CONFIG_JSON_ENV_VAR="$(python -m webdancer_rl.ray_job SERPER_API_KEY JINA_API_KEY)"
"""

from __future__ import annotations

import json
import os
import sys
from typing import Iterable, Mapping

RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # ray._private.runtime_env.constants


def job_config(names: Iterable[str], environ: Mapping[str, str]) -> str:
    """The job config JSON with the set variables among `names` added to its runtime env (an existing one is kept)."""
    job = json.loads(environ.get(RAY_JOB_ENV) or "{}")
    env_vars = job.setdefault("runtime_env", {}).setdefault("env_vars", {})
    env_vars.update({name: environ[name] for name in names if environ.get(name)})
    return json.dumps(job)


if __name__ == "__main__":
    print(job_config(sys.argv[1:], os.environ))
