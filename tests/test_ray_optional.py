"""Ray stays optional (issue 18): nothing but zaya_edge/app/distributed names it, and everything
imports without it. Also the distributed pieces that run without a cluster: placement, the
keeper's checkpoint folder, the token meter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_layers import ROOT, _imports, _layer_files

from zaya_edge.app.distributed.placement import MiB, Slot, plan
from zaya_edge.app.distributed.store import CheckpointKeeper, checkpoint_name
from zaya_edge.app.distributed.worker import TokenMeter
from zaya_edge.errors import CheckpointError, RequestError

DISTRIBUTED = ROOT / "zaya_edge" / "app" / "distributed"


def test_only_the_distributed_package_imports_ray():
    files = [p for layer in ("contract", "runtime", "export", "app", "hf") for p in _layer_files(layer)
             if DISTRIBUTED not in p.parents]
    assert [str(p.relative_to(ROOT)) for p in files if any(n.split(".")[0] == "ray" for n in _imports(p))] == []


def test_everything_imports_and_says_how_to_get_ray_without_it():
    code = ("import sys; sys.modules['ray'] = None\n"  # any `import ray` now fails
            "import zaya_edge.runtime, zaya_edge.runtime.rsa, zaya_edge.app.eval, zaya_edge.app.cli\n"
            "from zaya_edge.app.distributed import evaluate_on_ray\n"
            "from zaya_edge.errors import ZayaEdgeError\n"
            "try:\n    evaluate_on_ray('nowhere')\nexcept ZayaEdgeError as exc:\n    print(exc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Ray is not installed: pip install 'zaya-edge[ray]'"


def _node(name, cpus, gib, alive=True):
    return {"NodeID": name, "Alive": alive, "Resources": {"CPU": float(cpus), "memory": gib * 1024 * MiB}}


def test_actors_per_node_follow_cores_and_memory_interleaved():
    nodes = [_node("a", 8, 64), _node("b", 4, 64), _node("c", 16, 8), _node("dead", 64, 512, alive=False)]
    slots = plan(nodes, memory=4 * 1024 * MiB, threads=2)
    assert [s.node_id for s in slots] == ["a", "b", "c", "a", "b", "c", "a", "a"]  # c: memory for 2
    assert {s.threads for s in slots} == {2}
    split = plan(nodes, memory=16 * 1024 * MiB)  # no threads: a node's cores shared by what its memory fits
    assert split == [Slot("a", 2), Slot("b", 1), Slot("a", 2), Slot("b", 1), Slot("a", 2), Slot("b", 1),
                     Slot("a", 2), Slot("b", 1)]
    assert plan(nodes, memory=4 * 1024 * MiB, threads=2, actors=3) == slots[:3]


@pytest.mark.parametrize("kwargs,message", [
    (dict(threads=2, actors=7), "fits 6 engine actor"),
    (dict(threads=0), "threads per actor must be >= 1"),
    (dict(actors=0), "actors must be >= 1"),
    (dict(threads=64), "no node of the Ray cluster has a free core"),
    (dict(memory=0), "actor memory must be a positive number of bytes"),
])
def test_placement_refusals_are_one_line(kwargs, message):
    with pytest.raises(RequestError, match=message) as exc:
        plan([_node("a", 8, 64), _node("b", 4, 64)], **{"memory": 4 * 1024 * MiB, **kwargs})
    assert "\n" not in str(exc.value)


def test_the_keeper_mirrors_checkpoints_to_its_folder_and_reads_them_back(tmp_path):
    keeper = CheckpointKeeper(str(tmp_path / "run"))
    assert keeper.load(3) is None
    keeper.save(3, {"rounds": [{}, {}]})
    keeper.count("w0", 10), keeper.count("w1", 5), keeper.count("w0", 7)  # a late, smaller count is stale
    assert keeper.status() == (15, {3: 2})
    path = tmp_path / "run" / "problem-0003.json"
    assert json.loads(path.read_text()) == {"rounds": [{}, {}]} and checkpoint_name(str(tmp_path / "run"), 3) == str(path)
    assert CheckpointKeeper(str(tmp_path / "run")).load(3) == {"rounds": [{}, {}]}  # a resumed run
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="is corrupt"):
        CheckpointKeeper(str(tmp_path / "run")).load(3)
    memory_only = CheckpointKeeper(None)
    memory_only.save(0, {"rounds": []})
    assert memory_only.load(0) == {"rounds": []} and "Ray cluster" in checkpoint_name(None, 0)


def test_the_token_meter_sums_stages_and_sends_at_most_every_interval():
    from zaya_edge.runtime.rsa import RoundProgress

    sent = []
    meter = TokenMeter(sent.append, every_s=3600)

    def p(tokens, done=False):
        return RoundProgress(stage=0, rounds=1, kind="rollout", total=2, live=0, finished=0,
                             generated_tokens=tokens, elapsed_s=1.0, eta_s=0.0, done=done)

    for event in (p(5), p(9), p(12, done=True), p(4), p(8, done=True)):
        meter(event)
    assert sent == [5, 12, 20]  # the first, then each completed stage (the interval holds the rest back)
