import pytest

from clipdiff_mini.config import PROFILES, ConfigError, get_config, project_root


def test_profiles_exist_and_scale():
    ci, laptop, colab = (get_config(p) for p in ("ci", "laptop", "colab"))
    assert ci.data.n_train < laptop.data.n_train < colab.data.n_train
    assert laptop.data.n_train >= 10_000
    assert colab.precision in ("bf16", "fp16")


def test_unknown_profile_lists_allowed():
    with pytest.raises(ConfigError) as e:
        get_config("huge")
    for p in PROFILES:
        assert p in str(e.value)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        get_config("ci", {"diffusion.schedule": "quadratic"})
    assert "'sqrt'" in str(e.value) and "'cosine'" in str(e.value)


def test_unknown_key_and_wrong_type():
    with pytest.raises(ConfigError, match="allowed keys"):
        get_config("ci", {"data.n_trian": 3})
    with pytest.raises(ConfigError, match="expects int"):
        get_config("ci", {"data.n_train": "many"})
    with pytest.raises(ConfigError, match="negative"):
        get_config("ci", {"clip.lr": -1.0})


def test_overrides_apply_and_do_not_leak():
    cfg = get_config("ci", {"clip.lr": 1, "data.seed": 7})
    assert cfg.clip.lr == 1.0 and cfg.data.seed == 7
    assert get_config("ci").data.seed == 0


def test_env_profile(monkeypatch):
    monkeypatch.setenv("CLIPDIFF_PROFILE", "ci")
    assert get_config().profile == "ci"


def test_paths_resolve_under_project_root():
    cfg = get_config("ci")
    assert cfg.path("data_dir") == project_root() / "data"
    assert (project_root() / "pyproject.toml").exists()


def test_none_override_keeps_the_profile_value():
    ci = get_config("ci")
    assert get_config("ci", {"clip.train_steps": None, "diffusion.timesteps": None}) == ci
    assert get_config("ci", {"clip.train_steps": None, "clip.batch_size": 8}).clip.batch_size == 8
