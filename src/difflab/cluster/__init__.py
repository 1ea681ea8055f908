"""Running on a cluster: which process this is (rank, requeued job), whether the devices and nodes asked for
exist, the processes torchrun starts, and SIGTERM as an exception for work that cleans up after
itself. Reads no Hydra config."""
