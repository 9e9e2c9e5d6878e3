"""A library call leaves the process as it found it (``process.py`` documents the one
exception); the harness's settings apply only when asked for; Numba's threads survive fork."""
import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from convbench import process, registry, settings

FRESH_CALL = textwrap.dedent("""
    import os, sys, json
    before = dict(os.environ)
    import convbench as cb
    import numpy as np
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    cb.conv2d(x, w, algorithm="direct")
    cb.conv2d(x, w)
    cb.max_pool2d(x, 2)
    loaded = sorted(m for m in sys.modules if m.startswith(
        ("convbench.cuda", "convbench.peers", "torch", "scipy.signal", "numba.cuda")))
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    print(json.dumps({"loaded": loaded, "changed": changed}))
""")


def _fresh(code: str, **env) -> str:
    full = {k: v for k, v in os.environ.items()
            if k not in ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=full, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_library_call_loads_no_gpu_code_no_peer_and_changes_no_environment():
    import json

    got = json.loads(_fresh(FRESH_CALL))
    assert got == {"loaded": [], "changed": []}


@pytest.mark.skipif(sys.modules.get("torch") is None and __import__("importlib").util.find_spec(
    "torch") is None, reason="torch not installed: its flags cannot be touched")
def test_loading_every_peer_leaves_torch_tf32_flags_alone():
    code = textwrap.dedent("""
        import torch
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        from convbench import registry
        registry.algorithms()
        print(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    """)
    assert _fresh(code) == "True True"


def test_configure_for_benchmarks_is_explicit_and_documented(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    applied = process.configure_for_benchmarks()
    assert os.environ["GOMP_SPINCOUNT"] == "30000" and applied["GOMP_SPINCOUNT"] == "30000"
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")  # a value the user chose wins
    assert process.configure_for_benchmarks()["GOMP_SPINCOUNT"] == "5"


@pytest.mark.parametrize("value,expected", [("0", False), ("off", False), ("false", False),
                                            ("No", False), ("1", None), ("on", None)])
def test_steady_malloc_flag_words(monkeypatch, value, expected):
    monkeypatch.setenv("CONVBENCH_STEADY_MALLOC", value)
    result = process.steady_malloc()
    if expected is False:
        assert result is False
    else:  # switched on: True on glibc, False where mallopt does not exist
        import platform

        assert result is (platform.libc_ver()[0] == "glibc")


def _conv_in_child(_):
    import convbench as cb

    x = np.ones((2, 3, 16, 16), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    return float(cb.conv2d(x, w, algorithm="direct").sum() + cb.max_pool2d(x, 2).sum())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is a POSIX call")
def test_forked_children_compute_after_the_parent_ran_parallel_kernels():
    expected = _conv_in_child(0)  # the parent runs parallel kernels first
    with multiprocessing.get_context("fork").Pool(2) as pool:
        result = pool.map_async(_conv_in_child, range(4))
        assert result.get(timeout=120) == [expected] * 4


def test_registry_loading_is_all_or_nothing(monkeypatch):
    """A module that fails to import leaves the registry as it was, and the error is raised
    (here: the CPU peers, made to fail)."""
    before = {a.key for a in registry.algorithms(peers=False)}
    monkeypatch.setitem(registry.MODULES, ("cpu", True),
                        ("convbench.peers.cpu", "convbench.no_such_module"))
    monkeypatch.setattr(registry, "_loaded", {g for g in registry._loaded if g != ("cpu", True)})
    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items()
                                                if not v.is_peer})
    with pytest.raises(ModuleNotFoundError):
        registry.algorithms("conv2d", "cpu")
    assert {a.key for a in registry.algorithms(peers=False)} == before
    assert not [k for k, v in registry._REGISTRY.items() if v.is_peer]


@pytest.mark.parametrize("name,value,message", [
    ("CONVBENCH_AUTOTUNE", "maybe", "1/0/true/false/yes/no/on/off"),
    ("CONVBENCH_FFT_WORKERS", "abc", "integer >= 1"),
    ("CONVBENCH_FFT_WORKERS", "0", "integer >= 1"),
    ("CONVBENCH_FFT_WORKERS", "-100", "integer >= 1"),
    ("CONVBENCH_MAX_WORKSPACE", "inf", "byte count"),
    ("CONVBENCH_MAX_WORKSPACE", "lots", "byte count"),
    ("CONVBENCH_MAX_WORKSPACE", "-1G", "byte count"),
])
def test_bad_settings_name_the_variable_and_what_it_accepts(monkeypatch, name, value, message):
    import convbench as cb

    monkeypatch.setenv(name, value)
    x = np.ones((1, 2, 9, 9), np.float32)
    w = np.ones((2, 2, 5, 5), np.float32)
    algorithm = "fft" if name == "CONVBENCH_FFT_WORKERS" else "auto"
    with pytest.raises(settings.SettingError, match=name) as info:
        cb.conv2d(x, w, algorithm=algorithm)
    assert message in str(info.value)
    monkeypatch.delenv(name)  # the registry is whole afterwards: every algorithm still there
    assert {"fft", "fft_tiled", "scipy_fft"} <= {a.name for a in cb.algorithms()}
    assert cb.conv2d(x, w, algorithm="fft").shape == (1, 2, 5, 5)


def test_settings_follow_the_environment_as_it_changes(monkeypatch):
    name = "CONVBENCH_AUTOTUNE"  # read on every call of algorithm="auto"
    monkeypatch.delenv(name, raising=False)
    assert settings.flag(name, False) is False and settings.flag(name, True) is True
    for value, expected in (("on", True), ("off", False), ("YES", True), ("", False)):
        monkeypatch.setenv(name, value)
        assert settings.flag(name, False) is expected
    monkeypatch.setenv(name, "1")
    monkeypatch.delenv(name)
    assert settings.flag(name, False) is False


@pytest.mark.parametrize("raw,bytes_", [("1000", 1000), ("512M", 512 << 20), ("2G", 2 << 30),
                                        ("1.5k", 1536), ("64MB", 64 << 20)])
def test_workspace_limit_forms(monkeypatch, raw, bytes_):
    monkeypatch.setenv("CONVBENCH_MAX_WORKSPACE", raw)
    assert settings.byte_count("CONVBENCH_MAX_WORKSPACE") == bytes_


@pytest.mark.parametrize("name,value", [("CONVBENCH_FFT_WORKERS", "abc"),
                                        ("CONVBENCH_FFT_WORKERS", "0"),
                                        ("CONVBENCH_AUTOTUNE", "maybe"),
                                        ("CONVBENCH_MAX_WORKSPACE", "lots"),
                                        ("CONVBENCH_STEADY_MALLOC", "2")])
def test_every_bad_setting_is_one_line_naming_it_before_any_work(name, value, monkeypatch,
                                                                 capsys):
    from convbench.cli import main

    monkeypatch.setenv(name, value)
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"convbench: error: {name} must be") and "\n" not in err
