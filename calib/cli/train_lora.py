"""Train a LoRA calibration adapter only (no generation), on one or several GPUs.

    accelerate launch --multi_gpu --num_processes 4 -m calib.cli.train_lora \\
        model=llava-1.5-7b data=vscbench data.root=/data/vscbench method=lora \\
        hydra.run.dir=outputs/lora-llava-4gpu
    torchrun --nproc_per_node 4 -m calib.cli.train_lora ...      # the same, with torchrun

Each process loads the model onto its own GPU (``cuda:$LOCAL_RANK`` when ``model.device`` is
``auto`` or ``cuda``); the first one generates the base model's answers and saves the
adapter. Evaluate it on one GPU with ``calib-run ... method.adapter=<run>/method/adapter``.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from calib.cli.common import config_dir
from calib.errors import ConfigError
from calib.pipeline import build_method, fit_method, load_data, load_model
from train.lora import process_state

LORA_TARGET = "calib.methods.lora.LoraMethod"


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "method._target_") != LORA_TARGET:
        raise ConfigError("python -m calib.cli.train_lora trains a LoRA adapter: add method=lora")
    if cfg.method.adapter is not None:
        raise ConfigError(
            f"method.adapter={cfg.method.adapter} is set, so there is nothing to train: drop it"
        )
    local_rank = os.environ.get("LOCAL_RANK")
    if (
        local_rank is not None
        and cfg.model.device in ("auto", "cuda")
        and torch.cuda.is_available()
    ):
        with open_dict(cfg):  # one GPU per process under accelerate launch / torchrun
            cfg.model.device = f"cuda:{local_rank}"
    splits = load_data(cfg)
    method = build_method(cfg)
    vlm = load_model(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fit_method(method, vlm, splits.fit, run_dir, splits.validation)
    if process_state(vlm).is_main_process:
        print(
            f"\nadapter: {method.adapter_dir}\n"
            f"evaluate it with the same overrides and: method.adapter={method.adapter_dir}"
        )


if __name__ == "__main__":
    main()
