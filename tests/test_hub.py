"""Hub downloads fail fast without network, and still go to the hub when it answers."""
import logging
import socket

import pytest

from clipdiff_mini import hub
from clipdiff_mini.config import get_config

NOT_CACHED = "clipdiff-course/no-such-tokenizer"  # a hub name no cache on any machine holds


@pytest.fixture
def hub_constants(monkeypatch):
    """huggingface_hub as on a machine where HF_HUB_OFFLINE is not set (the test command sets it)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    return constants


@pytest.fixture
def no_network(monkeypatch, hub_constants):
    """The hub's host does not answer; every name lookup the libraries try is recorded and fails."""
    probed, lookups = [], []

    def fake_probe(host, port, timeout):
        probed.append((host, port))
        return "gaierror: [Errno -2] Name or service not known (simulated)"

    def fake_getaddrinfo(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(-2, "Name or service not known (simulated)")

    monkeypatch.setattr(hub, "_probe", fake_probe)
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    return probed, lookups


def test_environment_offline_needs_no_probe(monkeypatch, hub_constants):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_probe", lambda *a, **k: pytest.fail("probed although HF_HUB_OFFLINE=1"))
    access = hub.hub_access()
    assert not access.online and "HF_HUB_OFFLINE=1" in access.reason


def test_the_probe_goes_to_the_endpoint_or_the_proxy(monkeypatch, hub_constants):
    seen = []
    monkeypatch.setattr(hub, "_probe", lambda host, port, timeout: seen.append((host, port)) or "")
    assert hub.hub_access().online and seen[-1] == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.lan:8080/")
    assert hub.hub_access().endpoint == "http://mirror.lan:8080" and seen[-1] == ("mirror.lan", 8080)
    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lan:3128")
    hub.hub_access()
    assert seen[-1] == ("proxy.lan", 3128)
    monkeypatch.setenv("NO_PROXY", "huggingface.co")
    hub.hub_access()
    assert seen[-1] == ("huggingface.co", 443)


def test_probe_on_real_local_sockets():
    """Independent of the hub: a listening socket answers, a closed port does not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert hub._probe("127.0.0.1", port, timeout=5) == ""
    error = hub._probe("127.0.0.1", port, timeout=5)  # closed now
    assert "ConnectionRefusedError" in error or "refused" in error.lower()


def test_offline_mode_is_restored_even_after_an_error(hub_constants):
    with pytest.raises(RuntimeError):
        with hub.hub_offline_mode():
            assert hub_constants.HF_HUB_OFFLINE is True
            raise RuntimeError("boom")
    assert hub_constants.HF_HUB_OFFLINE is False


def test_a_reachable_hub_leaves_the_libraries_online(monkeypatch, hub_constants):
    monkeypatch.setattr(hub, "_probe", lambda *a, **k: "")
    with hub.hub_downloads() as access:
        assert access.online and hub_constants.HF_HUB_OFFLINE is False  # downloads go ahead


def test_bert_tokenizer_without_network_fails_at_once_with_the_way_out(no_network, hub_constants):
    from clipdiff_mini.data.tokenizers import load_bert_tokenizer

    probed, lookups = no_network
    with pytest.raises(OSError) as err:
        load_bert_tokenizer(NOT_CACHED)
    msg = str(err.value)
    assert "cannot be reached" in msg and "leave data.bert_name empty" in msg and NOT_CACHED in msg
    assert probed == [("huggingface.co", 443)]
    assert lookups == [], "the tokenizer loader went to the network although the hub did not answer"
    assert hub_constants.HF_HUB_OFFLINE is False  # offline mode only for the call


def test_pretrained_clip_without_network_fails_at_once_with_the_way_out(no_network, tmp_path):
    from clipdiff_mini.clip.model import PretrainedWeightsUnavailable, load_pretrained_clip

    probed, lookups = no_network
    cfg = get_config("ci", {"clip.source": "pretrained", "device": "cpu"})
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        load_pretrained_clip(cfg, cache_dir=str(tmp_path))  # an empty cache
    msg = str(err.value)
    assert "cannot be reached" in msg and "'clip.source': 'scratch'" in msg
    assert probed and lookups == [], "open_clip went to the network although the hub did not answer"


def test_the_real_offline_case_on_this_machine_does_not_retry(hub_constants, caplog, tmp_path):
    """With HF_HUB_OFFLINE unset and no network, no request is retried (each retry waits seconds)."""
    access = hub.hub_access()
    if access.online:
        pytest.skip("this machine reaches the hub: the offline case cannot be observed here")
    from clipdiff_mini.clip.model import PretrainedWeightsUnavailable, load_pretrained_clip
    from clipdiff_mini.data.tokenizers import load_bert_tokenizer

    caplog.set_level(logging.INFO)
    with pytest.raises(OSError, match="cannot be reached"):
        load_bert_tokenizer(NOT_CACHED)
    with pytest.raises(PretrainedWeightsUnavailable, match="cannot be reached"):
        load_pretrained_clip(get_config("ci", {"clip.source": "pretrained", "device": "cpu"}), cache_dir=str(tmp_path))
    retries = [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage()]
    assert retries == [], retries[:3]
