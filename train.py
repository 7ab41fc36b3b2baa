"""Train, compress, test and report an image classifier: `python train.py --help` for options."""

import hydra
from omegaconf import DictConfig

from litcompress import noise, resolvers

noise.install()  # before torch is imported: some of the lines it filters are printed then
resolvers.register()  # the config's own interpolations (${scratch_or_finetune:...})


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, not above: `--help`, `--cfg job` and a bad override answer without torch.
    from litcompress.run import main as run_main

    return run_main(cfg)


if __name__ == "__main__":
    main()
