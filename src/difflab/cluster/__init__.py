"""Running on a cluster: which process this is (rank, requeued job), whether the devices and nodes asked for
exist, and putting a preempted SLURM job back in the queue. Reads no Hydra config."""
