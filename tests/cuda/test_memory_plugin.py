"""The counting, caching EMM plugin's bookkeeping on any machine: the driver's allocation calls
are replaced by fakes, so no GPU is needed (on a GPU, test_cuda.py also runs it for real). In a
subprocess without the simulator, whose numba.cuda has no real driver module to plug into."""
import os
import subprocess
import sys
import textwrap

CHECK = textwrap.dedent("""
    import gc, itertools
    from numba.cuda.cudadrv import driver
    from convbench.cuda import memory

    addresses = itertools.count(1 << 20, 1 << 20)
    freed = []
    driver.driver.cuMemAlloc = lambda size: next(addresses)
    driver.driver.cuMemFree = freed.append

    class FakeContext:
        pass

    context = FakeContext()  # the manager holds only a weak proxy to it
    mm = memory._plugin_class()(context=context)
    mm.get_memory_info = lambda: driver.MemoryInfo(free=1 << 34, total=1 << 34)
    mm.initialize()
    a, b = mm.memalloc(4096), mm.memalloc(1024)
    assert memory.TRACKER.live == 5120, memory.TRACKER.live  # in use: not freed
    address = a.device_pointer
    del a
    gc.collect()
    assert memory.TRACKER.live == 1024 and memory.TRACKER.peak == 5120
    mm.initialize()  # Numba calls it on every prepare_for_use: the cache must survive it
    c = mm.memalloc(4096)
    assert c.device_pointer == address  # the cached block, no new cuMemAlloc
    assert memory.TRACKER.live == 5120 and freed == []
    del b, c
    gc.collect()
    mm.release_cached()
    assert len(freed) == 2 == len(set(freed)), freed  # each block freed once, at the end
""")


def test_blocks_stay_allocated_while_used_and_are_reused_after():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
