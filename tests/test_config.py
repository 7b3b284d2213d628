"""Config layers: shipped defaults → TOML file → STEMBRIDGE_* environment → flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import paths
from bridge.config import KEYS, load_config
from bridge.errors import ConfigError


@pytest.fixture
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The per-user config file must not leak into tests: point the config folder elsewhere.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_come_from_the_package_and_platform_folders(no_user_config: Path) -> None:
    config = load_config(env={})
    assert config.osc_host == "127.0.0.1" and config.osc_port == 9010
    assert config.paths_watch == (paths.default_watch_dir(),)
    assert config.paths_output == paths.default_output_dir()
    assert config.paths_state_dir == paths.state_dir()
    assert config.sqlite_path.parent == paths.state_dir()
    assert config.engine_device == "auto" and config.engine_quality == "render"
    assert config.engine_model is None and config.engine_use_cache is True
    assert config.non_default() == []


def test_each_layer_overrides_the_one_before_and_is_named(no_user_config: Path) -> None:
    file = write(no_user_config / "c.toml", '[osc]\nport = 9100\nhost = "127.0.0.2"\n[engine]\ndevice = "cpu"\n')
    env = {"STEMBRIDGE_OSC_PORT": "9200", "STEMBRIDGE_ENGINE_QUALITY": "preview"}
    config = load_config(file, env=env, flags={"osc.port": (9300, "--osc-port")})
    assert config.osc_port == 9300
    assert config.osc_host == "127.0.0.2"
    assert config.engine_device == "cpu"
    assert config.engine_quality == "preview"
    origins = {key: origin for key, _, origin in config.non_default()}
    assert origins == {
        "osc.port": "flag --osc-port",
        "osc.host": f"config {file}",
        "engine.device": f"config {file}",
        "engine.quality": "env STEMBRIDGE_ENGINE_QUALITY",
    }


def test_default_user_config_file_is_read_when_present(no_user_config: Path) -> None:
    folder = no_user_config / "xdg" / "stembridge"
    folder.mkdir(parents=True)
    write(folder / "config.toml", "[osc]\nport = 9555\n")
    assert load_config(env={}).osc_port == 9555


def test_config_file_from_environment(no_user_config: Path) -> None:
    file = write(no_user_config / "env.toml", "[daemon]\ndrain_timeout = 2\n")
    assert load_config(env={"STEMBRIDGE_CONFIG": str(file)}).daemon_drain_timeout == 2.0


def test_relative_paths_in_a_file_are_relative_to_the_file(no_user_config: Path) -> None:
    file = write(no_user_config / "c.toml", '[paths]\nwatch = ["in", "~/b"]\noutput = "out"\n')
    config = load_config(file, env={})
    assert config.paths_watch == (no_user_config / "in", Path.home() / "b")
    assert config.paths_output == no_user_config / "out"


def test_environment_lists_and_booleans(no_user_config: Path) -> None:
    env = {"STEMBRIDGE_PATHS_WATCH": "/a:/b", "STEMBRIDGE_OSC_ALLOW": "10.0.0.2, 10.0.0.3",
           "STEMBRIDGE_ENGINE_USE_CACHE": "no"}
    config = load_config(env=env)
    assert config.paths_watch == (Path("/a"), Path("/b"))
    assert config.osc_allow == ("10.0.0.2", "10.0.0.3")
    assert config.engine_use_cache is False


@pytest.mark.parametrize(("text", "message"), [
    ("[osc]\nprot = 1\n", "unknown key 'osc.prot'"),
    ("[osc]\nport = \"x\"\n", "osc.port must be a whole number"),
    ("[osc]\nport = 70000\n", "osc.port must be a port number"),
    ("[engine]\ndevice = \"gpu\"\n", "engine.device must be one of auto, cpu, cuda, mps"),
    ("[paths]\nwatch = \"/one\"\n", "paths.watch must be a list of folders"),
    ("port = 1\n", "'port' must be a [section] table"),
    ("[osc\n", "not valid TOML"),
])
def test_bad_config_file_names_file_key_and_reason(no_user_config: Path, text: str, message: str) -> None:
    file = write(no_user_config / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(file, env={})
    assert message in str(info.value)
    assert str(file) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_environment_value_names_the_variable(no_user_config: Path) -> None:
    with pytest.raises(ConfigError, match="environment STEMBRIDGE_DAEMON_DRAIN_TIMEOUT: daemon.drain_timeout must be a number"):
        load_config(env={"STEMBRIDGE_DAEMON_DRAIN_TIMEOUT": "soon"})


def test_missing_explicit_config_file(no_user_config: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(no_user_config / "absent.toml", env={})


def test_every_key_is_settable_from_the_environment(no_user_config: Path) -> None:
    # Guards the naming rule STEMBRIDGE_<SECTION>_<KEY> for keys added later.
    values = {"paths.watch": "/w", "paths.output": "/o", "paths.state_dir": "/s", "paths.allowed_roots": "/r",
              "osc.host": "127.0.0.3", "osc.port": "1234", "osc.allow": "h", "osc.max_subscribers": "3",
              "engine.device": "cpu", "engine.model": "m", "engine.model_repo": "/m", "engine.cache_dir": "/c",
              "engine.quality": "preview", "engine.use_cache": "0", "engine.dawproject": "1",
              "preview.auto": "1", "preview.preset": "karaoke", "preview.presets_file": "/p.toml",
              "preview.cache_mb": "64", "daemon.drain_timeout": "1",
              "daemon.log_level": "debug"}
    assert set(values) == set(KEYS)
    env = {"STEMBRIDGE_" + key.replace(".", "_").upper(): text for key, text in values.items()}
    config = load_config(env=env)
    assert len(config.non_default()) == len(KEYS)


def test_dawproject_key_turns_it_on_for_every_job(no_user_config: Path) -> None:
    from bridge.jobs.service import make_request

    source = no_user_config / "mix.wav"
    config = load_config(env={"STEMBRIDGE_ENGINE_DAWPROJECT": "true"})
    assert make_request(config, source, no_user_config, {}).dawproject is True
    assert make_request(config, source, no_user_config, {"dawproject": "0"}).dawproject is False
    assert make_request(load_config(env={}), source, no_user_config, {}).dawproject is False
