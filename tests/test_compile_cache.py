"""The command line's persistent compilation cache: where it goes, and how to turn it
off (the CLI side, with a cache shared by several runs, is in test_resume.py)."""

import jax
import pytest

from sparseq.runs import compile_cache


@pytest.fixture
def no_cache_dir(monkeypatch):
    """A process with no cache folder set yet (restored after the test)."""
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()  # nothing of the test's folder stays in use


@pytest.mark.parametrize("value", ["off", "OFF", "0", "none"])
def test_off_leaves_jax_alone(monkeypatch, no_cache_dir, value):
    monkeypatch.setenv(compile_cache.ENV_VAR, value)
    assert compile_cache.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None


def test_default_folder_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_cache_folder() == tmp_path / "sparseq" / "jax"


def test_a_folder_that_cannot_be_made_turns_the_cache_off_with_a_warning(monkeypatch, no_cache_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(compile_cache.ENV_VAR, str(blocker / "cache"))
    with pytest.warns(UserWarning, match="compilation cache off"):
        assert compile_cache.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None


def test_a_folder_is_used_and_created(monkeypatch, no_cache_dir, tmp_path):
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "cache"))
    assert compile_cache.enable_compilation_cache() == tmp_path / "cache"
    assert (tmp_path / "cache").is_dir()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
