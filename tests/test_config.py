from dataclasses import dataclass

import pytest
from conftest import ROOT

from webdancer.config import WebdancerConfig
from webdancer.config_loader import load_config
from webdancer.errors import ConfigError
from webdancer.keys import read_secret
from webdancer.options import validate_options


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert isinstance(cfg, WebdancerConfig)
    assert cfg.agent.max_turns == 20


def test_composition_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "agent:\n  max_turns: 7\nmodel:\n  model: base-model\n")
    path = write(tmp_path, "run.yaml", "defaults: [base.yaml]\nmodel:\n  model: run-model\n")
    cfg = load_config(path, ["agent.concurrency=3", "tools.search.top_k=5", "agent.tools=[search]"])
    assert cfg.agent.max_turns == 7
    assert cfg.model.model == "run-model"
    assert cfg.agent.concurrency == 3
    assert cfg.tools["search"] == {"top_k": 5, "web_root": cfg.web.root}
    assert cfg.agent.tools == ["search"]


def test_web_tools_follow_the_web_section():
    cfg = load_config(None, ["web.root=/tmp/w", "web.port=9001"])
    assert cfg.tools["search"]["web_root"] == "/tmp/w"
    assert cfg.tools["visit"]["local_sites"] == ["127.0.0.1:9001"]
    explicit = load_config(None, ["web.root=/tmp/w", "tools.search.web_root=/elsewhere"])
    assert explicit.tools["search"]["web_root"] == "/elsewhere"


def test_unknown_key_names_key_and_closest(tmp_path):
    path = write(tmp_path, "c.yaml", "agent:\n  max_turn: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "agent.max_turn" in msg and "max_turns" in msg and str(path) in msg


def test_unknown_section_names_closest():
    with pytest.raises(ConfigError, match=r"'modle'.*closest valid keys: model"):
        load_config(None, ["modle.model=x"])


def test_ill_typed_value_names_key():
    with pytest.raises(ConfigError, match=r"'agent.max_turns'"):
        load_config(None, ["agent.max_turns=lots"])


def test_bad_override_form():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["agent.max_turns"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "agent:\n  max_turns: 3\n  bad: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)


def test_missing_file_and_include_cycle(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path, "a.yaml", "defaults: [a.yaml]\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(path)


@dataclass
class SearchOptions:
    backend: str = "local"
    top_k: int = 10


def test_component_options_validated_with_same_errors():
    assert validate_options(SearchOptions, {"top_k": 3}, "tools.search").top_k == 3
    with pytest.raises(ConfigError, match=r"'tools.search.topk'.*top_k"):
        validate_options(SearchOptions, {"topk": 3}, "tools.search")
    with pytest.raises(ConfigError, match=r"'tools.search.top_k'.*integer"):
        validate_options(SearchOptions, {"top_k": "many"}, "tools.search")


@pytest.mark.parametrize("override, message", [
    ("tools.serach.backend=serper", r"'tools.serach': no tool named 'serach' is registered; closest valid tool names: search"),
    ("policies.exprt.max_query_words=3", r"'policies.exprt': no policy named 'exprt' is registered; closest valid policy names: expert"),
    ("tools.visit.timeout=5", r"unknown config key 'tools.visit.timeout'; closest valid keys: timeout_s"),
    ("rewards.format.wieght=1", r"unknown config key 'rewards.format.wieght'"),
])
def test_a_typo_in_a_component_section_is_an_error_at_load(override, message):
    """Every command loads through here (`config show` included): nothing is ignored, nothing refused only later."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_secret_names_env_var(monkeypatch):
    monkeypatch.delenv("WD_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="WD_TEST_KEY"):
        read_secret("WD_TEST_KEY", "the test endpoint")
    monkeypatch.setenv("WD_TEST_KEY", "s3cret")
    assert read_secret(["OTHER_UNSET", "WD_TEST_KEY"], "x") == "s3cret"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")))
def test_every_shipped_config_loads_and_names_known_stages(path):
    from webdancer_pipeline.config import OPTIONAL_STAGES, PIPELINE_STAGES

    cfg = load_config(ROOT / path)
    assert set(cfg.pipeline.stages) <= set(PIPELINE_STAGES + OPTIONAL_STAGES)
