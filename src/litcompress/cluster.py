"""Jobs started by submitit (``hydra/launcher=submitit_local`` or ``submitit_slurm``): Lightning's
view of their processes.

On SLURM, submitit starts one task per device with ``srun`` and Lightning's own
``SLURMEnvironment`` reads them. A local submitit job (``submitit_local``) starts its tasks
itself and sets only submitit's variables: without :class:`SubmititEnvironment` Lightning would
start the other DDP ranks again by re-running the command line, which is submitit's.
"""

from __future__ import annotations

import os
import zlib

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only


class SubmititEnvironment(ClusterEnvironment):
    """The tasks of a submitit job as DDP processes (ranks from submitit's job environment)."""

    def __init__(self) -> None:
        super().__init__()
        from submitit import JobEnvironment

        self._job = JobEnvironment()

    @property
    def creates_processes_externally(self) -> bool:
        return True  # submitit started every task

    @property
    def main_address(self) -> str:
        return self._job.hostnames[0] if self._job.num_nodes > 1 else "127.0.0.1"

    @property
    def main_port(self) -> int:
        # Every task derives the same port from the job id (as Lightning's SLURM environment).
        return 15000 + zlib.crc32(str(self._job.job_id).encode()) % 20000

    @staticmethod
    def detect() -> bool:
        """A task of a local submitit job with several tasks (SLURM jobs are SLURM's)."""
        tasks = os.environ.get("SUBMITIT_LOCAL_NTASKS")
        return tasks is not None and int(tasks) > 1 and not SLURMEnvironment.detect()

    def world_size(self) -> int:
        return self._job.num_tasks

    def set_world_size(self, size: int) -> None:
        pass  # fixed by submitit

    def global_rank(self) -> int:
        return self._job.global_rank

    def set_global_rank(self, rank: int) -> None:
        pass  # fixed by submitit

    def local_rank(self) -> int:
        return self._job.local_rank

    def node_rank(self) -> int:
        return self._job.node


def cluster_plugins() -> list[ClusterEnvironment]:
    """The Trainer's cluster environment when this process is a task of a local submitit job;
    its rank is then known at once (rank-zero work before fitting is done by one task only)."""
    if not SubmititEnvironment.detect():
        return []
    environment = SubmititEnvironment()
    rank_zero_only.rank = environment.global_rank()
    return [environment]
