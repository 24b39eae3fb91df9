"""Regenerate mnistkit/assets/probe.tflite: y = 2x + 1 over float32 [4] (doctor runs it on LiteRT)."""
import litert_torch
import torch


class Probe(torch.nn.Module):
    def forward(self, x):
        return x * 2.0 + 1.0


open("mnistkit/assets/probe.tflite", "wb").write(litert_torch.convert(Probe().eval(), (torch.zeros(4),)).model_content())
