"""Regenerate mnistkit/assets/probe.ncnn.param + probe.ncnn.bin: y = 2x + 1 over float32 [4] (doctor runs it on
ncnn), converted by pnnx as mnistkit's ncnn writer does (fp32 weights)."""
import shutil
import subprocess
import tempfile
from pathlib import Path

import pnnx
import torch


class Probe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.fc.weight.copy_(2 * torch.eye(4))
            self.fc.bias.fill_(1.0)

    def forward(self, x):
        return self.fc(x)


with tempfile.TemporaryDirectory() as work:
    work = Path(work)
    torch.jit.trace(Probe().eval(), torch.zeros(1, 4)).save(str(work / "probe.pt"))
    subprocess.run([pnnx.EXEC_PATH, str(work / "probe.pt"), "inputshape=[1,4]f32", "fp16=0",
                    f"ncnnparam={work / 'p.param'}", f"ncnnbin={work / 'p.bin'}", f"ncnnpy={work / 'p.py'}",
                    f"pnnxparam={work / 'x.param'}", f"pnnxbin={work / 'x.bin'}", f"pnnxpy={work / 'x.py'}",
                    f"pnnxonnx={work / 'x.onnx'}"], cwd=work, check=True, capture_output=True)
    shutil.copyfile(work / "p.param", "mnistkit/assets/probe.ncnn.param")
    shutil.copyfile(work / "p.bin", "mnistkit/assets/probe.ncnn.bin")
