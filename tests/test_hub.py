"""Hub access where the Hub may not answer: the report metrics' loaders read the local cache only, so a
missing file fails at once (not after huggingface_hub's retries), and the offline switch is restored."""

import socket

import pytest
from huggingface_hub import constants, hf_hub_download

import medkit.hub as hub
from medkit.eval import report_metrics as rm

PROBE = hub.hub_reachable  # the cached probe (tests replace the module attribute)


@pytest.fixture
def online_env(monkeypatch):
    """A user's environment: HF_HUB_OFFLINE not set (the test runner sets it)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    PROBE.cache_clear()
    yield
    PROBE.cache_clear()


def test_a_metric_model_missing_from_the_cache_fails_at_once_when_the_hub_is_unreachable(online_env, monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    seen = []

    def factory():
        seen.append(constants.HF_HUB_OFFLINE)
        return hf_hub_download("nobody/absent-metric-model", "config.json", cache_dir=tmp_path)

    with pytest.raises(rm.BackendUnavailable, match=r"needs the NER weights \(loading failed: (OfflineModeIsEnabled|LocalEntryNotFoundError)"):
        rm._load(factory, "needs the NER weights")
    assert seen == [True]
    assert constants.HF_HUB_OFFLINE is False  # restored for whatever runs next


def test_a_cached_file_still_loads_when_the_hub_is_unreachable(online_env, monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    repo = "someone/metric-model"
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("a" * 40)
    path = rm._load(lambda: hf_hub_download(repo, "config.json", cache_dir=tmp_path), "needs it")
    assert open(path).read() == "{}"


def test_a_reachable_hub_is_left_online(online_env, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert rm._run(lambda: constants.HF_HUB_OFFLINE, "needs it") is False


def test_the_probe_says_unreachable_when_no_connection_opens(online_env, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert hub.hub_reachable() is False


def test_offline_mode_is_unreachable_without_probing(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    PROBE.cache_clear()

    def probed(*args, **kwargs):
        raise AssertionError("probed the network in offline mode")

    monkeypatch.setattr(socket, "create_connection", probed)
    try:
        assert hub.hub_reachable() is False
    finally:
        PROBE.cache_clear()
