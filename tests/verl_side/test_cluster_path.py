"""The cluster path through verl's own code, on the CPU (run in .venvs/rl): hydra's parser on every value we write,
outages that stop training instead of becoming observations or skipped groups, the checkpoint the pipeline serves
after RL, and a two-node Ray cluster on loopback whose workers see what verl's driver sets up for them.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from webdancer.config_loader import load_config
from webdancer.errors import OutageError
from webdancer.records import QAItem, ToolCall
from webdancer.wire import render_assistant

ROOT = Path(__file__).resolve().parents[2]
QUESTION = QAItem("Who invented the integrated circuit in 1958 at Texas Instruments?", "Jack Kilby", tag="crawlqa")


def compose(overrides):
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def test_every_value_we_write_reads_back_through_hydra_and_omegaconf():
    """The judge's options (a dict) once reached hydra as Python's `{'base_url': ...}`, which hydra refuses; strings that
    look like numbers, bools or lists, quotes, backslashes and `${` must come back as the same string."""
    from webdancer_rl.hydra_overrides import override

    values = {"url": "https://dashscope.aliyuncs.com/compatible-mode/v1", "year": "1991", "bool": "true", "none": "null",
              "float": "1e-5", "spaces": "a b, c", "quotes": "it's \"x\"", "backslash": "C:\\new\\", "interpolation": "${oc.env:HOME}",
              "escaped": "\\${x}", "brackets": "[x]{y}=z", "unicode": "ünï", "empty": "", "int": 3, "real": 1e-6, "flag": False,
              "nothing": None, "list": [1, "a b", {"k": "v"}], "judge": {"model": {"base_url": "http://h:1/v1", "api_key_env": "K"}},
              "empty_dict": {}}
    overrides = [o for key, v in values.items() for o in override(f"probe.{key}", v, add=True)]
    assert any(o.startswith("+probe.judge.model.base_url=") for o in overrides)  # a dict: one override per leaf
    assert OmegaConf.to_container(compose(overrides).probe, resolve=True) == values


@pytest.fixture
def serper_down(local_web, tmp_path, monkeypatch):
    """Prepared RL data whose search tool is Serper at a port where nothing listens."""
    from webdancer_rl.prepare import prepare

    monkeypatch.setenv("SERPER_API_KEY", "serper-test-key")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    web, _, _ = local_web
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "rl.val_fraction=0", "tools.search.backend=serper",
                             f"tools.search.serper_url=http://127.0.0.1:{port}/search", "tools.search.max_retries=0",
                             "tools.search.backoff_s=0.01", "tools.visit.cache_dir=null"])
    return prepare([QUESTION], cfg, tmp_path / "rl_data")


async def test_a_tool_outage_in_a_verl_rollout_is_raised_not_shown_to_the_model(serper_down, tokenizer):
    """verl's ToolAgentLoop answers every exception of a tool with its text ("Error executing tool ...") and the policy
    would be trained on that turn; our loop re-raises the outage, so the rollout fails instead."""
    from test_in_verl import ScriptedServer, verl_loop

    turns = [render_assistant("I will search.", tool_call=ToolCall("search", {"query": ["integrated circuit"]})),
             render_assistant("Done.", answer="Jack Kilby")]
    server = ScriptedServer(tokenizer, turns)
    with pytest.raises(OutageError, match="serper search failed"):
        await verl_loop(tokenizer, serper_down, server).run(
            {}, raw_prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": QUESTION.question}], extra_info={})
    assert len(server.prompts) == 1  # the model never got a turn after the failed call


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


class RayNodes:
    """A Ray cluster of two nodes on loopback, each started by `ray start --block` from the RL environment with an
    environment emptied of everything (no API key, no PYTHONPATH, no HF settings), as a fresh cluster node has."""

    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="wdray")  # Ray's socket paths must stay short
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.procs = []
        ray = str(Path(sys.executable).with_name("ray"))
        bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "RAY_USAGE_STATS_ENABLED": "0"}
        common = ["--block", "--num-cpus", "4", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
        self._start([ray, "start", "--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir", self.temp, *common], bare)
        self._wait_nodes(1)
        self._start([ray, "start", "--address", self.address, "--resources", json.dumps({"probe_node": 1}), *common], bare)
        self._wait_nodes(2)

    def _start(self, command, env):
        self.procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def _wait_nodes(self, n, timeout=90):
        deadline = time.monotonic() + timeout
        probe = f"import ray; ray.init(address={self.address!r}, logging_level='ERROR'); print(sum(1 for x in ray.nodes() if x['Alive']))"
        while time.monotonic() < deadline:
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
            if out.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the Ray cluster did not reach {n} nodes: {out.stderr[-2000:]}")

    def stop(self):
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_nodes():
    nodes = RayNodes()
    yield nodes
    nodes.stop()


def test_workers_on_another_node_get_the_environment_python_and_keys_the_driver_sets_up(ray_nodes, local_web, tmp_path, monkeypatch):
    """verl's own driver code (main_ppo.run_ppo: its runtime env merged with ours, then ray.init) on a cluster whose nodes
    were started without our variables: a task on the other node runs the RL environment's Python, imports webdancer from
    this checkout, reads the offline-hub and metrics settings and the API keys (carried by Ray's job-level runtime env,
    not the command), and finds the run's files at the command's absolute paths."""
    import ray
    from verl.trainer.main_ppo import run_ppo
    from webdancer_rl.prepare import prepare
    from webdancer_rl.ray_job import RAY_JOB_ENV, job_config
    from webdancer_rl.train import verl_overrides, verl_python

    web, _, _ = local_web
    monkeypatch.chdir(tmp_path)  # relative run paths: the command must make them absolute
    cfg = load_config(str(ROOT / "configs" / "rl" / "qwen2.5-7b.yaml"),
                      [f"web.root={web.root}", f"web.port={web.port}", "run.root=runs", "rl.val_fraction=0", f"rl.venv={Path(sys.prefix)}"])
    monkeypatch.setenv("SERPER_API_KEY", "serper-key-of-the-driver")
    data = prepare([QUESTION], cfg, Path("runs/qwen7b/rl_data"))
    overrides = verl_overrides(cfg, Path("runs/qwen7b/rl_data"), Path("runs/qwen7b/rl"))
    assert not any("serper-key-of-the-driver" in o for o in overrides)  # the key is never in the command
    config = compose(overrides)
    out = tmp_path / "probe.json"
    OmegaConf.update(config, "webdancer_probe_out", str(out), force_add=True)

    plain = subprocess.run([sys.executable, "-c", PLAIN_TASK.format(address=ray_nodes.address)], capture_output=True, text=True, timeout=120)
    assert plain.stdout.strip().splitlines()[-1] == "None None"  # the control: the nodes themselves carry none of it

    monkeypatch.setenv("RAY_ADDRESS", ray_nodes.address)
    monkeypatch.setenv(RAY_JOB_ENV, job_config(["SERPER_API_KEY"], os.environ))
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes cannot import this test module
    try:
        run_ppo(config, task_runner_class=ProbeRunner)
    finally:
        ray.shutdown()
    seen = json.loads(out.read_text())
    import webdancer_rl.reward

    assert seen["python"] == verl_python(cfg) == str(Path(sys.prefix).absolute() / "bin" / "python")
    assert seen["reward_module"] == webdancer_rl.reward.__file__
    assert seen["env"] == {"SERPER_API_KEY": "serper-key-of-the-driver", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                           "VERL_FILE_LOGGER_PATH": str((tmp_path / "runs/qwen7b/rl/verl_metrics.jsonl").resolve()),
                           "WEBDANCER_TOKEN_ROLLOUTS": str((tmp_path / "runs/qwen7b/rl/token_rollouts").resolve())}  # rl.record_tokens
    assert seen["files"] == {str(data.train.resolve()): True, str(data.tool_config.resolve()): True}


PLAIN_TASK = """
import ray
ray.init(address={address!r}, logging_level="ERROR")
@ray.remote(resources={{"probe_node": 1}}, num_cpus=0)
def env():
    import os
    return os.environ.get("SERPER_API_KEY"), os.environ.get("HF_HUB_OFFLINE")
print(*ray.get(env.remote()))
"""


def _look(paths):
    import os
    import sys

    import webdancer_rl.reward

    names = ("SERPER_API_KEY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VERL_FILE_LOGGER_PATH", "WEBDANCER_TOKEN_ROLLOUTS")
    return {"python": sys.executable, "reward_module": webdancer_rl.reward.__file__, "env": {k: os.environ.get(k) for k in names},
            "files": {p: os.path.exists(p) for p in paths}}


def _ray_class():
    import ray

    @ray.remote(num_cpus=0)
    class ProbeRunner:
        """Stands in for verl's TaskRunner: run_ppo starts it as it starts the TaskRunner; it looks from the other node."""

        def run(self, config):
            import ray

            paths = [config.data.train_files, config.actor_rollout_ref.rollout.multi_turn.tool_config_path]
            on_probe_node = ray.remote(resources={"probe_node": 1}, num_cpus=0)(_look)
            seen = ray.get(on_probe_node.remote(paths))
            Path(config.webdancer_probe_out).write_text(json.dumps(seen))

    return ProbeRunner


ProbeRunner = _ray_class()


def test_an_outage_stops_verls_trainer_instead_of_dropping_the_group(ray_nodes, monkeypatch):
    """With our patch (third_party_patches/verl/0001), a rollout that fails with an outage tags its group so that verl's
    replay buffer raises it in the trainer; any other failure keeps verl's behaviour (the group is dropped). Real
    TransferQueue, real patched verl functions; the rollouts themselves stand in (one raises, as our loop does)."""
    import asyncio

    import ray
    import transfer_queue as tq
    from verl.trainer.ppo.v1 import agent_loop_tq
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    class Worker:
        """The attributes AgentLoopWorkerTQ._run_prompt reads; its sessions fail with `error`."""

        def __init__(self, error):
            self.config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"n": 2, "val_kwargs": {"n": 1}}}})
            self.error = error

        async def _run_agent_loop(self, sampling_params, **kwargs):
            if kwargs["session_id"] == 1:
                raise self.error

    run_prompt = agent_loop_tq.AgentLoopWorkerTQ.__ray_actor_class__._run_prompt
    ray.init(address=ray_nodes.address, logging_level="ERROR")
    try:
        tq.init()
        buffer = ReplayBuffer(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None, max_off_policy_strategy="drop",
                              sampler_kwargs={}, refill_fn=lambda n: None, filter_groups_metric=None, train_batch_size=1, gen_batch_size=1)

        def run(uid, error):
            tq.kv_put(key=uid, partition_id="train", tag={"is_prompt": True, "global_steps": 1, "status": "pending"})
            asyncio.run(run_prompt(Worker(error), {"uid": uid}, {}, {"validate": False}))

        run("plain", ValueError("a bug in a rollout"))
        buffer._sync_metadata_from_transfer_queue()
        assert "plain" in buffer.failure_keys["train"]  # verl's behaviour, unchanged
        run("outage", OutageError("serper search failed after 4 tries (connection refused)"))
        with pytest.raises(RuntimeError, match="stops training: OutageError: serper search failed after 4 tries"):
            buffer._sync_metadata_from_transfer_queue()
    finally:
        tq.close()
        ray.shutdown()


def test_the_trained_model_is_verls_latest_hugging_face_checkpoint(tmp_path):
    """After verl, `rl/model` (what eval_rl serves) is the Hugging Face folder of the checkpoint verl's own tracker names as
    latest; a checkpoint saved without Hugging Face weights is an error that says how to merge it."""
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path, get_checkpoint_tracker_filename
    from webdancer_rl.train import publish_verl_model

    from webdancer.errors import WebdancerError

    checkpoints = tmp_path / "rl" / "checkpoints"
    for step in (5, 10):
        hf = checkpoints / f"global_step_{step}" / "actor" / "huggingface"
        hf.mkdir(parents=True)
        (hf / "config.json").write_text("{}")
        (hf / "model.safetensors").write_bytes(b"x" * step)
    Path(get_checkpoint_tracker_filename(str(checkpoints))).write_text("10")
    model = publish_verl_model(tmp_path / "rl")
    assert model == tmp_path / "rl" / "model" and model.resolve() == Path(find_latest_ckpt_path(str(checkpoints))).resolve() / "actor" / "huggingface"
    assert (model / "model.safetensors").read_bytes() == b"x" * 10
    (model.resolve() / "model.safetensors").unlink()
    with pytest.raises(WebdancerError, match="no Hugging Face weights.*verl.model_merger merge"):
        publish_verl_model(tmp_path / "rl")
