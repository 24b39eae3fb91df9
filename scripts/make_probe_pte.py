"""Regenerate mnistkit/assets/probe.pte: y = 2x + 1 over float32 [4], lowered to XNNPACK (doctor runs it)."""
import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower


class Probe(torch.nn.Module):
    def forward(self, x):
        return x * 2.0 + 1.0


program = torch.export.export(Probe(), (torch.zeros(4),))
open("mnistkit/assets/probe.pte", "wb").write(
    to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
