"""`accelerate launch --config_file configs/accelerate/fsdp_8gpu.yaml --num_processes 2 tests/fsdp_on_cpu.py
<vla.train overrides>`: vla.train under real FSDP2 on CPU processes (gloo). accelerate takes its FSDP
path only on GPUs (without one it quietly runs DDP), so this launcher turns it on after the
Accelerator is made; everything else is vla.train's own code."""

import accelerate
import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin


class FSDPOnCPU(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for shared in (PartialState._shared_state, self.state.__dict__):  # AcceleratorState() copies PartialState's
            shared["distributed_type"] = DistributedType.FSDP
            shared["device"] = torch.device("cpu")
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables the launcher set


accelerate.Accelerator = FSDPOnCPU

if __name__ == "__main__":
    from vla.train import main

    main()
