"""The runtime on a multi-node `ray.cluster_utils.Cluster` with logical GPUs, all on this machine.

A head node (CPU only) and two GPU nodes; stores in a folder all nodes share. No timed assertions:
waits poll for a state with a generous deadline.
"""
from functools import partial

import pytest
import ray
from ray.cluster_utils import Cluster

import conftest
from actors.runtime import start_controller
from configs import load_config

pytestmark = pytest.mark.timeout(300)
wait_for = partial(conftest.wait_for, deadline=120.0, retry_on=(Exception,))  # an actor restarting or moving: ask again

SYNTH = "synth://?seed={}&fps=4&speed=2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    gpu_nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    cfg = load_config(overrides={"runtime": {
        "snapshot_dir": str(tmp_path_factory.mktemp("shared-snapshots")), "encoder_gpus": 1.0,
        "request_timeout": 20.0, "health_interval": 0.5}})
    controller = start_controller(cfg)
    yield c, gpu_nodes, controller
    ray.kill(controller)
    ray.shutdown()
    c.shutdown()


def ingest_node(controller, sid):
    return ray.get(ray.get(controller.ingest_of.remote(sid)).ping.remote(), timeout=30)


def timeline(controller, sid):
    return ray.get(controller.timeline.remote(sid), timeout=30)


def test_one_encoder_per_gpu_node_and_streams_spread(cluster):
    c, gpu_nodes, controller = cluster
    placement = ray.get(controller.placement.remote())
    assert sorted(placement["encoder_nodes"]) == sorted(n.node_id for n in gpu_nodes)
    assert placement["controller_node"] == c.head_node.node_id  # so losing a GPU node cannot take it down
    for i in range(4):
        ray.get(controller.add_stream.remote(f"s{i}", SYNTH.format(i)))
    placement = ray.get(controller.placement.remote())
    assert sorted(placement["streams"].values()) == [0, 0, 1, 1]
    for i in range(4):  # each stream's ingest worker runs on its encoder's node
        assert ingest_node(controller, f"s{i}") == placement["encoder_nodes"][placement["streams"][f"s{i}"]]
    for i in range(4):
        wait_for(lambda: len(timeline(controller, f"s{i}")) >= 2, f"cubes of s{i}")


def test_node_removed_under_load_streams_continue_from_snapshots(cluster):
    c, gpu_nodes, controller = cluster
    placement = ray.get(controller.placement.remote())
    # Remove the GPU node this driver is not attached to: with several raylets on one host the driver may be
    # attached to a GPU node's, and losing it would cut the test off from the cluster, not the runtime.
    driver = ray.get_runtime_context().get_node_id()
    lost = next(i for i, node in enumerate(placement["encoder_nodes"]) if node != driver)
    moved = sorted(sid for sid, e in placement["streams"].items() if e == lost)
    before = {sid: timeline(controller, sid) for sid in moved}
    node = next(n for n in gpu_nodes if n.node_id == placement["encoder_nodes"][lost])
    c.remove_node(node)
    wait_for(lambda: all(e != lost for e in ray.get(controller.placement.remote(), timeout=30)["streams"].values()), "the move")
    for sid in moved:  # its ingest moved too: the worker that decodes it now is on the node left
        assert ingest_node(controller, sid) == next(n for i, n in enumerate(placement["encoder_nodes"]) if i != lost)
        after = wait_for(lambda: (t := timeline(controller, sid)) and len(t) > len(before[sid]) + 2 and t,
                         f"new cubes of {sid} on the other node")
        assert after[:len(before[sid])] == before[sid], f"{sid}: a closed cube was lost in the move"
        assert [x["id"] for x in after] == list(range(len(after)))
    # the encoders answer questions (runtime.llm_actors: 0): a moved stream's new one, and a search over all
    # streams goes to the live encoders only, every time (no retry here: a call sent to the lost one fails)
    answer = ray.get(controller.ask.remote(moved[0], "what happened ?"), timeout=30)
    assert answer["citations"] and answer["cubes_considered"] > len(before[moved[0]])
    for _ in range(4):
        results = ray.get(controller.search.remote("square", None, None, None, 5), timeout=30)
        assert results and {r["stream"] for r in results} <= set(placement["streams"])


def test_encoder_process_killed_recovers_without_losing_a_closed_cube(cluster):
    c, gpu_nodes, controller = cluster
    sid = "s1"
    before = timeline(controller, sid)
    ray.kill(ray.get(controller.encoder_of.remote(sid)), no_restart=False)
    after = wait_for(lambda: (t := timeline(controller, sid)) and len(t) > len(before) + 2 and t,
                     "new cubes after the restart")
    assert after[:len(before)] == before
    assert [x["id"] for x in after] == list(range(len(after)))
