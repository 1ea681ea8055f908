"""A run's process groups end with the run, not in the interpreter's exit: torch's DTensor caches kept the device
mesh FSDP2 trains on (and through it the gloo process groups and their threads) alive after destroy_process_group,
until Python's finalization tore them down, where that can abort a finished run ('terminate called without an
active exception', exit -6: seen once in CI after a trainer=fsdp run that had written its checkpoint)."""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from difflab.cluster.processes import end_process_groups


def test_the_device_mesh_fsdp_trained_on_is_freed_when_the_process_groups_end(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'meet'}", rank=0, world_size=1)
    try:
        mesh_alive = trained_mesh()
        end_process_groups()
    finally:
        if dist.is_initialized():  # this test's worker goes on to other tests
            dist.destroy_process_group()
    assert mesh_alive() is None, "the device mesh (and its process groups) outlived the end of the run"


def trained_mesh() -> weakref.ref:
    """A step and a full checkpoint's gather of a net sharded by FSDP2, as a trainer=fsdp run makes them; a weak
    reference to its mesh."""
    mesh = init_device_mesh("cpu", (1,))
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    fully_shard(net, mesh=mesh)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    get_model_state_dict(net, options=StateDictOptions(full_state_dict=True))
    return weakref.ref(mesh)
